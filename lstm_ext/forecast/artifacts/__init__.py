"""The files a training run leaves in its folder (--out), each with one writer
and one reader that checks it before use:

    checkpoint.pt     the training state: config, weights, optimizer and
                      generator states, history, best weights, scaling
                      (``checkpoint``: save_checkpoint, load_checkpoint)
    model.pt          the scripted Forecaster a deployment runs
    model.json        what a deployment needs besides it
                      (``exported``: export, model_meta, load_exported)
    last_window.csv   the series' last window, the C++ example's input

Checkpoints and models are written whole or not at all (``files``). The
evaluation's metrics.json and plots are written by ``evaluation``.
"""
from .checkpoint import (CHECKPOINT_FORMAT, check_checkpoint, forecaster_from_checkpoint,
                         load_checkpoint, restore, save_checkpoint, training_objects)
from .exported import (FORECASTER_NAMES, FORECASTER_TYPES, MODEL_FORMAT, check_scripted, export,
                       load_exported, load_forecaster, load_meta, model_meta, write_last_window)
from .files import (CHECKPOINT, LAST_WINDOW_FILE, META_FILE, METRICS_FILE, MODEL_FILE,
                    make_out_dir, save_atomic)

__all__ = [
    "CHECKPOINT", "CHECKPOINT_FORMAT", "FORECASTER_NAMES", "FORECASTER_TYPES",
    "LAST_WINDOW_FILE", "META_FILE", "METRICS_FILE", "MODEL_FILE", "MODEL_FORMAT",
    "check_checkpoint", "check_scripted", "export", "forecaster_from_checkpoint",
    "load_checkpoint", "load_exported", "load_forecaster", "load_meta", "make_out_dir",
    "model_meta", "restore", "save_atomic", "save_checkpoint", "training_objects",
    "write_last_window",
]
