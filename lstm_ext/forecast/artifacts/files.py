"""The names of a run's files, and how they are written: whole or not at all,
into an output folder checked first."""
import os

import torch

from ...export.archive import first_line  # noqa: F401  (the one home; artifacts use it from here)

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
