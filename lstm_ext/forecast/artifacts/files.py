"""The names of a run's files, and how they are written: whole or not at all,
into an output folder checked first."""
import os
import zipfile
import zlib
from typing import Optional

import torch

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
META_FILE = "model.json"
METRICS_FILE = "metrics.json"
LAST_WINDOW_FILE = "last_window.csv"


def save_atomic(obj, path: str) -> None:
    """torch.save to a temporary file, then rename: an interrupted run never
    leaves a truncated checkpoint behind."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def make_out_dir(path: str) -> None:
    """Creates the output folder (--out) if need be; ValueError if it cannot be one."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out {path}: expected a folder, but it is a file")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {path}: cannot create the folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path}: the folder is not writable")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an error's message, for a one-line report."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def zip_damage(path: str) -> Optional[str]:
    """Why a file that starts as a zip archive (torch.save's, TorchScript's and
    a .pt2 package's format) must not be read, or None. torch reads such a file
    without its checksums: a flipped bit in a tensor's bytes loaded as a
    different weight (a forecast silently changed), and for a copy cut short it
    says "[Errno 22] Invalid argument" or "failed finding central directory.
    This is an internal miniz error...", which does not tell a user what
    happened. Reading the file once more costs about half a millisecond per MB
    (100 MB: 42-49 ms, torch.load 81-85 ms)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return None
        with zipfile.ZipFile(path) as archive:
            for entry in archive.infolist():
                try:
                    with archive.open(entry) as member:  # checks the CRC at the end
                        while member.read(1 << 20):
                            pass
                except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                    why = "Bad CRC-32" if isinstance(exc, zipfile.BadZipFile) else first_line(exc)
                    return f"a damaged zip archive (entry {entry.filename!r}: {why})"
    except zipfile.BadZipFile:
        return (f"a zip archive cut short or damaged ({os.path.getsize(path)} bytes, no "
                "central directory): was the copy interrupted?")
    except Exception:  # unreadable, or beyond zipfile's limits: torch's message stands
        return None
    return None
