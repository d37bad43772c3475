"""The exported model: the one writer and reader of ``model.pt`` (the scripted
Forecaster a deployment runs, Python or C++) and ``model.json`` (what a
deployment needs besides: window, horizon, scaling, the columns it reads, and
where the model came from), with their validators. Also the forecast
command's way to a forecaster, from an exported model or a checkpoint."""
import json
import os
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..forecaster import Forecaster
from ..series import Series, columns_of
from ..settings import LIMITS, TrainConfig, brief, check_setting
from .checkpoint import forecaster_from_checkpoint, load_checkpoint
from .files import LAST_WINDOW_FILE, META_FILE, MODEL_FILE, first_line

MODEL_FORMAT = "lstm_ext.forecaster/1"

# The type names a scripted Forecaster carries: TorchScript records the Python
# module it was defined in, lstm_ext.forecaster before the forecasting
# application moved to lstm_ext.forecast (models exported then still load), and
# lstm_ext.forecast.forecaster since; it may also insert ".___torch_mangle_N"
# before the class name. ``check_scripted`` compares the class name alone
# (``original_name``), which all of these share.
FORECASTER_TYPES = ("__torch__.lstm_ext.forecaster.Forecaster",
                    "__torch__.lstm_ext.forecast.forecaster.Forecaster")
FORECASTER_NAMES = {name.rsplit(".", 1)[1] for name in FORECASTER_TYPES}


def model_meta(cfg: TrainConfig, scaler: Dict[str, float], best_epoch: int,
               series: Optional[Series] = None, metrics: Optional[dict] = None) -> dict:
    """The model.json of a forecaster trained with ``cfg``. Training passes its
    ``series``, which adds where it came from (file, last time, time step,
    values filled) and the column it found, and the test ``metrics``; exporting
    a checkpoint has neither, and names the column given in ``cfg`` (None: the
    file's one numeric column, found again when a file is read)."""
    column, time_column = columns_of(cfg.csv, cfg.column, cfg.time_column)
    meta = {"format": MODEL_FORMAT}
    if series is not None:
        meta["source"] = series.source
        column = series.column
    meta.update(column=column, time_column=time_column, window=cfg.window, horizon=cfg.horizon,
                season=cfg.season, **scaler, input_size=1)
    if series is not None:
        times = series.times
        meta.update(
            last_time=str(times[-1].date()) if times is not None else None,
            time_step_days=float(np.median(np.diff(times.values)) / np.timedelta64(1, "D"))
            if times is not None and len(times) > 1 else None,
            filled_missing=series.filled)
    meta["best_epoch"] = best_epoch
    if metrics is not None:
        meta["test_metrics"] = metrics
    return meta


def export(forecaster: Forecaster, meta: dict, out: str) -> str:
    """Writes the TorchScript model (raw values in, raw forecast out) and the
    JSON a deployment reads (scaling, window, horizon, column)."""
    path = os.path.join(out, MODEL_FILE)
    scripted = torch.jit.script(forecaster)
    tmp = path + ".tmp"
    scripted.save(tmp)
    os.replace(tmp, path)
    with open(os.path.join(out, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    return path


def load_meta(path: str) -> dict:
    """A model.json, checked: a JSON object with the window and horizon a
    Forecaster can have, and text (or null) as column names."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the model's metadata is missing "
                                "(it is written next to the model by train/export)")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not a JSON file ({first_line(exc)})") from None
    if not isinstance(meta, dict):
        kinds = {list: "an array", str: "a string", bool: "true or false", int: "a number",
                 float: "a number", type(None): "null"}
        raise ValueError(f"{path}: expected a JSON object with the model's settings, "
                         f"but found {kinds.get(type(meta), type(meta).__name__)}")
    for key in ("window", "horizon"):
        if key not in meta:
            raise ValueError(f"{path}: '{key}' is missing")
        check_setting(f"{path}: '{key}'", LIMITS[key], meta[key])
    for key in ("column", "time_column"):
        if not isinstance(meta.get(key), (str, type(None))):
            raise ValueError(f"{path}: '{key}': expected text or null, "
                             f"but got {brief(meta[key])}")
    return meta


def load_exported(path: str):
    """The exported model at ``path`` (a scripted Forecaster) and its model.json
    next to it, each checked, and agreeing on window and horizon."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file "
                                "(train first: python -m lstm_ext train)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(path, map_location="cpu")
        check_scripted(module)
    except Exception as exc:  # torch.jit.load raises several types for a damaged file
        what = str(exc) if isinstance(exc, ValueError) else \
            f"not a TorchScript model file ({first_line(exc)})"
        raise ValueError(f"{path}: {what}") from None
    meta_path = os.path.splitext(path)[0] + ".json"
    meta = load_meta(meta_path)
    for key in ("window", "horizon"):
        if meta[key] != getattr(module, key):
            raise ValueError(f"{meta_path}: {key} {meta[key]} does not match "
                             f"{key} {getattr(module, key)} of {path}")
    return module, meta


def check_scripted(module) -> None:
    """Raises ValueError unless ``module`` (from ``torch.jit.load``) is a scripted
    Forecaster: its type, its ``forward`` and ``step`` methods, and its
    constants (window, horizon, scaling) with the values a Forecaster can have."""
    name = getattr(module, "original_name", type(module).__name__)
    if not isinstance(module, torch.jit.ScriptModule) or name not in FORECASTER_NAMES:
        raise ValueError(f"not an lstm_ext Forecaster, but a {name}")
    for method in ("forward", "step"):
        if not callable(getattr(module, method, None)):
            raise ValueError(f"a Forecaster without a '{method}' method")
    for attr in ("window", "horizon", "scale", "target_scale"):
        try:
            LIMITS[attr].check(getattr(module, attr, None))
        except ValueError as exc:
            raise ValueError(f"Forecaster attribute '{attr}': {exc}") from None
    if getattr(module, "input_size", None) != 1:
        raise ValueError(f"Forecaster attribute 'input_size': expected 1, "
                         f"but got {getattr(module, 'input_size', None)!r}")


def write_last_window(series: Series, window: int, out: str) -> str:
    """The series' last ``window`` values, one a line under the column's name:
    the input the C++ application (examples/cpp) forecasts from."""
    path = os.path.join(out, LAST_WINDOW_FILE)
    np.savetxt(path, series.values[-window:], fmt="%.6f", header=series.column, comments="")
    return path


def load_forecaster(model: Optional[str], checkpoint: Optional[str] = None
                    ) -> Tuple[object, dict, str]:
    """(forecaster, meta, file) for the forecast command: from ``checkpoint``
    if one is given, else from the exported ``model``. ``meta`` has the window
    and the columns to read: model.json's, or for a checkpoint those of the
    embedded series (for a file of one's own, the command line names them)."""
    if checkpoint:
        ckpt = load_checkpoint(checkpoint)
        cfg = ckpt["config"]
        column, time_column = columns_of(cfg["csv"], None, None)
        meta = {"window": cfg["window"], "column": column, "time_column": time_column}
        return forecaster_from_checkpoint(ckpt), meta, checkpoint
    module, meta = load_exported(model)
    return module, meta, model
