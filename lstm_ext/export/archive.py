"""Reading a zip archive torch wrote (torch.save's checkpoints, TorchScript
models, .pt2 packages) with its checksums, which torch's own readers skip."""
import os
import zipfile
import zlib
from typing import Optional


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
    (100 MB: 49-63 ms, torch.load 86-91 ms, three runs beside another job).
    C++ programs make the same check (lstm_ext/include/lstm_ext/model_file.h)."""
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
