"""The exported model: the one writer and reader of ``model.pt`` (the scripted
Forecaster a deployment runs, Python or C++), ``model.pt2`` (the same
Forecaster as an AOTInductor package, with streaming step programs, for
``torch::inductor::AOTIModelPackageLoader``), ``model.onnx`` (its ONNX form,
for onnxruntime) and ``model.json`` (what a deployment needs besides: window,
horizon, scaling, the columns it reads, and where the model came from), with
their validators. Also the forecast command's way to a forecaster, from an
exported model of any of these formats or a checkpoint."""
import json
import os
import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ...export.archive import zip_damage
from ..forecaster import Forecaster
from ..frequency import parse_freq, time_label
from ..series import Series, columns_of
from ..settings import LIMITS, TrainConfig, brief, check_setting
from .checkpoint import check_intervals, forecaster_from_checkpoint, load_checkpoint
from .files import LAST_WINDOW_FILE, META_FILE, MODEL_FILE, first_line

MODEL_FORMAT = "lstm_ext.forecaster/1"

# export(..., fmt=...): the formats and the file each writes (beside model.json).
FORMATS = {"torchscript": MODEL_FILE, "pt2": "model.pt2", "onnx": "model.onnx"}
EXPORT_FORMATS = tuple(FORMATS)

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
               series: Optional[Series] = None, metrics: Optional[dict] = None,
               intervals: Optional[Dict[str, list]] = None) -> dict:
    """The model.json of a forecaster trained with ``cfg``. Training passes its
    ``series``, which adds where it came from (file, last time, time step,
    values filled) and the column it found, and the test ``metrics``; exporting
    a checkpoint has neither, and names the column given in ``cfg`` (None: the
    file's one numeric column, found again when a file is read)."""
    column, time_column = columns_of(cfg.csv, cfg.column, cfg.time_column)
    if scaler.get("per_window") and column is None:  # several series: a long-format file's
        column, time_column = "y", "ds"
    meta = {"format": MODEL_FORMAT}
    if series is not None:
        meta["source"] = series.source
        column = series.column
    if series is not None and series.time_column is not None:
        time_column = series.time_column
    meta.update(column=column, time_column=time_column, window=cfg.window, horizon=cfg.horizon,
                season=cfg.season, **scaler, input_size=1)
    # since the hybrid forecaster: the frequency (pandas alias, null without
    # times), the Fourier period, and the prediction intervals' half-widths
    # per lead (forecast +- width; null if not calibrated)
    meta.update(freq=cfg.freq, period=cfg.period, intervals=intervals)
    if series is not None:
        times = series.times
        meta.update(
            last_time=time_label(times[-1], cfg.freq) if times is not None else None,
            time_step_days=float(np.median(np.diff(times.values)) / np.timedelta64(1, "D"))
            if times is not None and len(times) > 1 else None,
            filled_missing=series.filled)
    # bf16: trained under bfloat16 autocast (--bf16); the model file computes in
    # float32 either way (its weights are the float32 master weights)
    meta["bf16"] = cfg.bf16
    meta["best_epoch"] = best_epoch
    if metrics is not None:
        meta["test_metrics"] = metrics
    return meta


def _deployment_metadata(forecaster: Forecaster) -> dict:
    """What a .pt2 / .onnx carries about the Forecaster itself (model.json has the rest)."""
    return {"lstm_ext.model_format": MODEL_FORMAT, "window": forecaster.window,
            "horizon": forecaster.horizon, "input_size": forecaster.input_size}


def export(forecaster: Forecaster, meta: dict, out: str, fmt: str = "torchscript") -> str:
    """Writes the model (raw values in, raw forecast out) in format ``fmt`` and
    the JSON a deployment reads (scaling, window, horizon, column); returns the
    model's path. ``fmt``: "torchscript" (model.pt), "pt2" (model.pt2: an
    AOTInductor package with dynamic batch and sequence axes and the streaming
    step) or "onnx" (model.onnx, the layer op as ONNX LSTM operators)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    path = os.path.join(out, FORMATS[fmt])
    if fmt == "torchscript":
        scripted = torch.jit.script(forecaster)
        tmp = path + ".tmp"
        scripted.save(tmp)
        os.replace(tmp, path)
    else:
        from ...export import ExportError, export_onnx, export_pt2
        try:
            if fmt == "pt2":
                export_pt2(forecaster, path, metadata=_deployment_metadata(forecaster))
            else:
                export_onnx(forecaster, path, output_names=["forecast"],
                            metadata=_deployment_metadata(forecaster))
        except ExportError as exc:
            raise ValueError(f"export --format {fmt}: {exc}") from None
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
    for key in ("column", "time_column", "freq"):
        if not isinstance(meta.get(key), (str, type(None))):
            raise ValueError(f"{path}: '{key}': expected text or null, "
                             f"but got {brief(meta[key])}")
    if meta.get("freq") is not None:
        parse_freq(meta["freq"], f"{path}: 'freq'")
    for key in ("per_window", "bf16"):
        if not isinstance(meta.get(key, False), bool):
            raise ValueError(f"{path}: '{key}': expected true or false, "
                             f"but got {brief(meta[key])}")
    check_intervals(meta.get("intervals"), meta["horizon"], f"{path}: 'intervals'")
    return meta


def load_exported(path: str):
    """The exported model at ``path`` (a scripted Forecaster ``.pt``, a ``.pt2``
    package or an ``.onnx`` file written by ``export``) and its model.json next
    to it, each checked, and agreeing on window and horizon. A .pt2 or .onnx
    comes back as a callable taking and returning tensors as the Forecaster."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file "
                                "(train first: python -m lstm_ext train)")
    kind = _format_of(path)
    if kind == "pt2":
        module = _load_pt2(path)  # load_pt2 checks the archive's checksums itself
    elif kind == "onnx":
        module = _OnnxForecaster(path)
    else:
        damage = zip_damage(path)  # torch reads a flipped bit in a tensor as data
        if damage:
            raise ValueError(f"{path}: not a readable model file ({damage})")
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
    scaled = getattr(module, "per_window", None)   # (a scripted Forecaster's constant)
    if isinstance(scaled, bool) and scaled != meta.get("per_window", False):
        raise ValueError(f"{meta_path}: per_window {meta.get('per_window', False)} does not "
                         f"match per_window {scaled} of {path}")
    return module, meta


def _format_of(path: str) -> str:
    """"pt2" or "onnx" by extension; else TorchScript (whose loader reports
    other files as not TorchScript)."""
    ext = os.path.splitext(path)[1].lower()
    return {".pt2": "pt2", ".onnx": "onnx"}.get(ext, "torchscript")


def _forecaster_attributes(path: str, values: dict, what: str) -> dict:
    """window, horizon, input_size from a .pt2's or .onnx's metadata, checked."""
    if values.get("lstm_ext.model_format") != MODEL_FORMAT:
        raise ValueError(f"{path}: {what} is not an lstm_ext Forecaster (export one with "
                         "python -m lstm_ext export)")
    out = {}
    for attr in ("window", "horizon", "input_size"):
        try:
            out[attr] = int(values[attr])
            if attr != "input_size":
                LIMITS[attr].check(out[attr])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: Forecaster attribute '{attr}': "
                             f"{exc if isinstance(exc, ValueError) else 'missing'}") from None
    if out["input_size"] != 1:
        raise ValueError(f"{path}: Forecaster attribute 'input_size': expected 1, "
                         f"but got {out['input_size']}")
    return out


def _load_pt2(path: str):
    from ...export import ExportError, load_pt2
    try:
        model = load_pt2(path)
    except ExportError as exc:
        raise ValueError(str(exc)) from None
    for attr, value in _forecaster_attributes(path, model.metadata, "the package").items():
        setattr(model, attr, value)
    return model


class _OnnxForecaster:
    """An exported model.onnx run by onnxruntime, called as the Forecaster:
    ``x (batch, steps, 1)`` -> ``(batch, horizon)`` tensors."""

    def __init__(self, path: str) -> None:
        try:
            import onnx
            import onnxruntime
        except ImportError:
            raise ValueError(f"{path}: running an ONNX model needs the onnx and onnxruntime "
                             "packages (pip install onnx onnxruntime)") from None
        try:
            proto = onnx.load(path, load_external_data=False)
            props = {p.key: p.value for p in proto.metadata_props}
        except Exception as exc:  # noqa: BLE001  (DecodeError and friends)
            raise ValueError(f"{path}: not an ONNX model file ({first_line(exc)})") from None
        self.__dict__.update(_forecaster_attributes(path, props, "the ONNX model"))
        try:
            self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path}: onnxruntime cannot load it ({first_line(exc)})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[2] != 1 or x.shape[1] < 2:
            raise ValueError(f"x: expected shape (batch, steps >= 2, 1), but got {list(x.shape)}")
        out = self.session.run(None, {self.input_name: x.detach().to(torch.float32).numpy()})
        return torch.from_numpy(out[0])


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
        column, time_column = columns_of(cfg["csv"], cfg["column"], cfg["time_column"])
        meta = {"window": cfg["window"], "horizon": cfg["horizon"], "column": column,
                "time_column": time_column, "freq": cfg["freq"], "intervals": ckpt["intervals"],
                "per_window": bool(ckpt["scaler"].get("per_window", False))}
        return forecaster_from_checkpoint(ckpt), meta, checkpoint
    module, meta = load_exported(model)
    return module, meta, model
