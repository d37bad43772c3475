"""Training checkpoints: the one writer (``save_checkpoint``) and the one
reader (``load_checkpoint``), which loads tensors and plain data only and
checks that every part fits the others (``check_checkpoint``)."""
import math
import os
import pickle
import warnings
import zipfile
from dataclasses import asdict
from typing import Dict, List, Optional, Tuple

import torch

from ...export.archive import zip_damage
from ...nn import LSTMModel
from ..forecaster import Forecaster, build_model
from ..settings import (LIMITS, Limit, TrainConfig, brief, check_config, check_setting,
                        with_later_settings)
from .files import first_line, save_atomic

# /2: the hybrid forecaster (its linear part, "linear") and prediction
# intervals ("intervals"); settings inferred from the data in "config".
CHECKPOINT_FORMAT = "lstm_ext.checkpoint/2"
CHECKPOINT_KEYS = ("config", "epoch", "model_state", "optimizer_state", "generator_state",
                   "history", "best_val_loss", "best_epoch", "best_state", "scaler", "linear",
                   "seasonal", "intervals")
LEVELS = ("80", "95")  # the prediction intervals' nominal coverage, percent


def save_checkpoint(path: str, cfg: TrainConfig, epoch: int, model: LSTMModel,
                    optimizer: torch.optim.Optimizer, generator: torch.Generator,
                    history: List[dict], best: dict, scaler: Dict[str, float],
                    linear: torch.Tensor, seasonal: Optional[torch.Tensor] = None,
                    intervals: Optional[Dict[str, List[float]]] = None) -> None:
    """Writes the training state after ``epoch`` (atomically). ``best`` holds
    the best epoch so far: its "epoch", "val_loss" and weights ("state");
    ``linear`` the hybrid's linear weights (window + 1, horizon);
    ``intervals`` the half-widths per lead of each level (None until the
    training is done)."""
    save_atomic({
        "format": CHECKPOINT_FORMAT, "config": asdict(cfg), "epoch": epoch,
        "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
        "generator_state": generator.get_state(), "history": history,
        "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
        "best_state": best["state"], "scaler": scaler, "linear": linear,
        "seasonal": seasonal, "intervals": intervals,
    }, path)


def _is_torchscript(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except Exception:  # not a zip archive (or a damaged one): torch.load will say
        return False


def load_checkpoint(path: str) -> dict:
    """Loads a checkpoint without running code from it (tensors and plain data
    only) and checks it (``check_checkpoint``); ValueError names the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    damage = zip_damage(path)  # torch.load reads a flipped bit in a tensor as data
    if damage:
        raise ValueError(f"{path}: not a readable checkpoint ({damage})")
    if _is_torchscript(path):
        raise ValueError(f"{path}: a TorchScript model, not a training checkpoint "
                         "(forecast from it with --model)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: not a readable checkpoint: damaged, or it holds Python "
                         "objects other than tensors and plain data, which are refused "
                         "(loading them could run code from the file)") from None
    except Exception as exc:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                         f"{first_line(exc)})") from None
    try:
        check_checkpoint(ckpt)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    ckpt["config"] = with_later_settings(ckpt["config"])  # an older one's: bf16 False
    return ckpt


def check_checkpoint(ckpt) -> TrainConfig:
    """Raises ValueError unless ``ckpt`` is a complete lstm_ext checkpoint whose
    parts fit together: its config, the weights built from that config, the
    optimizer and generator states, scaling and history. Returns the config."""
    if isinstance(ckpt, dict) and ckpt.get("format") == "lstm_ext.checkpoint/1":
        raise ValueError("a checkpoint of an older lstm_ext (format lstm_ext.checkpoint/1, "
                         "before the hybrid forecaster): train again")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not an lstm_ext checkpoint (expected format '{CHECKPOINT_FORMAT}')")
    for key in CHECKPOINT_KEYS:
        if key not in ckpt:
            raise ValueError(f"not a complete checkpoint: '{key}' is missing")
    cfg = check_config(ckpt["config"])
    scaler = ckpt["scaler"]
    if not isinstance(scaler, dict) or sorted(k for k in scaler if k != "per_window") != \
            ["scale", "target_scale"]:
        raise ValueError(f"'scaler': expected a dict with 'scale' and 'target_scale', "
                         f"but got a {type(scaler).__name__}")
    if not isinstance(scaler.get("per_window", False), bool):
        raise ValueError(f"scaler 'per_window': expected true or false, "
                         f"but got {brief(scaler['per_window'])}")
    for key in ("scale", "target_scale"):
        check_setting(f"scaler '{key}'", LIMITS[key], scaler[key])
    epoch = check_setting("'epoch'", Limit(int, 1), ckpt["epoch"])
    check_setting("'best_epoch'", Limit(int, 0, epoch), ckpt["best_epoch"])
    check_setting("'best_val_loss'", Limit(float, 0.0), ckpt["best_val_loss"])
    _check_history(ckpt["history"], epoch)
    for key in ("best_state", "model_state"):  # before building a model of that size
        _check_weights(ckpt[key], cfg, key)
    linear = ckpt["linear"]
    if not (torch.is_tensor(linear) and linear.dtype in (torch.float32, torch.float64)
            and linear.layout == torch.strided and list(linear.shape) ==
            [cfg.window + 1, cfg.horizon] and bool(torch.isfinite(linear).all())):
        raise ValueError(f"'linear': expected finite float weights of shape "
                         f"[{cfg.window + 1}, {cfg.horizon}], but got {_describe(linear)}")
    seasonal = ckpt["seasonal"]
    if seasonal is not None and not (
            torch.is_tensor(seasonal) and seasonal.dtype in (torch.float32, torch.float64)
            and seasonal.dim() == 1 and seasonal.numel() in (4, 6, 8, 10)
            and bool(torch.isfinite(seasonal).all()) and 0 < float(seasonal[0]) <= math.pi):
        raise ValueError(f"'seasonal': expected None or [omega, psi, K sin and K cos "
                         f"coefficients] (K from 1 to 4, 0 < omega <= pi), but got "
                         f"{_describe(seasonal)}")
    check_intervals(ckpt["intervals"], cfg.horizon, "'intervals'")

    with torch.random.fork_rng(devices=[]):  # building models draws random numbers
        model, optimizer, generator = training_objects(cfg)
    restore(ckpt, cfg, model, optimizer, generator)
    return cfg


def _describe(value) -> str:
    if torch.is_tensor(value):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return brief(value)


def check_intervals(intervals, horizon: int, what: str) -> None:
    """None, or {"80": [...], "95": [...]}: per lead, a half-width from 0 to
    1e38 (the series' values are within 1e36; a half-width of 1e308 from an
    edited file made the forecast's bounds -inf and inf)."""
    if intervals is None:
        return
    fits = (isinstance(intervals, dict) and sorted(intervals) == sorted(LEVELS)
            and all(isinstance(v, list) and len(v) == horizon
                    and all(Limit(float, 0.0, 1e38).allows(w) for w in v)
                    for v in intervals.values()))
    if not fits:
        raise ValueError(f"{what}: expected {{'80': [...], '95': [...]}} with {horizon} "
                         f"half-widths from 0 to 1e38 each, but got {brief(intervals)}")


def _check_history(history, epochs: int) -> None:
    def fits(k, entry):
        return (isinstance(entry, dict) and entry.get("epoch") == k + 1
                and all(Limit(float, 0.0).allows(entry.get(key))
                        for key in ("train_loss", "val_loss")))

    if not (isinstance(history, list) and len(history) == epochs
            and all(fits(k, entry) for k, entry in enumerate(history))):
        raise ValueError(f"'history': expected a list of the {epochs} epochs' 'epoch', "
                         f"'train_loss' and 'val_loss', but got {brief(history)}")


def training_objects(cfg: TrainConfig
                     ) -> Tuple[LSTMModel, torch.optim.Optimizer, torch.Generator]:
    """A fresh model, optimizer and generator for ``cfg``: what a checkpoint's
    training state restores into (``restore``)."""
    model = build_model(cfg)
    # the LSTM's head starts at zero: before training the forecaster is its
    # linear part alone (epoch 0, a candidate for the best epoch)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    return model, optimizer, torch.Generator().manual_seed(cfg.seed)


def _load_weights(model: LSTMModel, state, cfg: TrainConfig, key: str) -> None:
    """``model.load_state_dict`` for a checkpoint's weights ``state`` (``ckpt[key]``)."""
    _check_weights(state, cfg, key)
    model.load_state_dict(state)


def _check_weights(state, cfg: TrainConfig, key: str) -> None:
    """``state`` must hold exactly the finite float tensors of the shapes that
    ``cfg`` gives the model (found without building it)."""
    def is_weight(v):
        return (torch.is_tensor(v) and v.is_floating_point() and v.layout == torch.strided
                and v.device.type == "cpu")

    if not isinstance(state, dict):
        raise ValueError(f"'{key}': expected a dict of float tensors, but got {brief(state)}")
    for name, v in state.items():  # the first misfit by name (a whole dict's repr spans lines)
        if not is_weight(v):
            what = (f"a {v.dtype} tensor ({v.layout}, on {v.device})" if torch.is_tensor(v)
                    else f"{type(v).__name__} {brief(v)}")
            raise ValueError(f"'{key}': expected a dict of float tensors, but "
                             f"{brief(name)} is {what}")
    wanted = {k: list(v.shape) for k, v in build_model(cfg, device="meta").state_dict().items()}
    got = {k: list(v.shape) for k, v in state.items()}
    if got != wanted:
        raise ValueError(f"its weights do not fit its config (hidden_size {cfg.hidden_size}, "
                         f"num_layers {cfg.num_layers}, horizon {cfg.horizon}): "
                         f"'{key}': {_misfit(got, wanted)}")
    if not all(torch.isfinite(v).all() for v in state.values()):
        raise ValueError(f"'{key}': the weights hold NaN or infinite values")


def _misfit(got: dict, wanted: dict) -> str:
    """The first difference between two {name: shape} dicts, for a message."""
    def first(names, what):
        names = sorted(map(str, names))
        more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
        return f"{brief(names[0])} {what}{more}"

    missing = [k for k in wanted if k not in got]
    if missing:
        return first(missing, "is missing")
    unknown = [k for k in got if k not in wanted]
    if unknown:
        return first(unknown, "is not in the model")
    name = next(k for k in wanted if got[k] != wanted[k])
    return f"'{name}' has shape {got[name]}, the config needs {wanted[name]}"


def restore(ckpt: dict, cfg: TrainConfig, model: LSTMModel, optimizer: torch.optim.Optimizer,
            generator: torch.Generator) -> None:
    """Loads a checkpoint's training state into a fresh model, optimizer and
    generator (see ``training_objects``); ValueError says which part does not fit."""
    _load_weights(model, ckpt["model_state"], cfg, "model_state")
    settings = [{k: v for k, v in group.items() if k != "params"}
                for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer_state"])
        _check_optimizer(optimizer, settings)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise ValueError(f"its optimizer state does not fit its weights and config: "
                         f"{first_line(exc)}") from None
    try:
        generator.set_state(ckpt["generator_state"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"'generator_state': not a random generator's state: "
                         f"{first_line(exc)}") from None


def _check_optimizer(optimizer: torch.optim.Optimizer, settings: List[dict]) -> None:
    """After load_state_dict: the settings (lr, betas, ...) must be those the
    config gives, the moment estimates finite and shaped as the weights (a
    0-dim one broadcast and failed in the first step), the second moments
    >= 0 (their square root), and Adam's step count a number >= 1 (its bias
    correction divides by 1 - beta^step: a step of -1 or 0 divided by zero or
    went negative)."""
    for group, wanted in zip(optimizer.param_groups, settings):
        for key, value in wanted.items():
            if group.get(key) != value:
                raise ValueError(f"'{key}' is {brief(group.get(key))}, expected {brief(value)}")
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if not torch.is_tensor(value) or not torch.isfinite(value).all():
                    raise ValueError(f"'{name}' is {brief(value)}, expected finite numbers")
                if name == "step":
                    if value.numel() != 1 or float(value) < 1:
                        raise ValueError(f"'step' is {brief(value)}, expected one number >= 1")
                    continue
                if value.shape != param.shape:
                    raise ValueError(f"'{name}' has shape {list(value.shape)}, "
                                     f"expected {list(param.shape)}")
                if name.endswith("exp_avg_sq") and bool((value < 0).any()):
                    raise ValueError(f"'{name}' holds negative values, expected >= 0 "
                                     "(a mean of squares)")


def forecaster_from_checkpoint(ckpt: dict) -> Forecaster:
    """The best weights of a checkpoint from ``load_checkpoint``, as a Forecaster."""
    cfg = TrainConfig(**ckpt["config"])
    model = build_model(cfg)
    _load_weights(model, ckpt["best_state"], cfg, "best_state")
    model.eval()
    return Forecaster(model, ckpt["scaler"]["scale"], ckpt["scaler"]["target_scale"],
                      cfg.window, cfg.horizon, linear=ckpt["linear"],
                      seasonal=ckpt["seasonal"],
                      per_window=ckpt["scaler"].get("per_window", False)).eval()
