"""The main job: train an LSTM forecaster on a series, evaluate it against honest
baselines, plot, and export it for deployment (TorchScript + JSON)."""
import json
import math
import os
import pickle
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import data
from .forecaster import Forecaster, check_scripted
from .model import LSTMModel
from .settings import LIMITS, Limit, brief

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
META_FILE = "model.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FORMAT = "lstm_ext.checkpoint/1"
CHECKPOINT_KEYS = ("config", "epoch", "model_state", "optimizer_state", "generator_state",
                   "history", "best_val_loss", "best_epoch", "best_state", "scaler")


@dataclass
class TrainConfig:
    csv: Optional[str] = None
    column: Optional[str] = None
    time_column: Optional[str] = None
    window: int = 104
    horizon: int = 13
    season: int = data.DEFAULT_SEASON
    hidden_size: int = 32
    num_layers: int = 1
    lr: float = 0.005
    batch_size: int = 64
    epochs: int = 60
    patience: int = 10
    seed: int = 0
    out: str = os.path.join("runs", "co2")


@dataclass
class Prepared:
    series: data.Series
    split: data.Split
    scaler: data.Scaler
    tensors: Dict[str, List[torch.Tensor]] = field(default_factory=dict)
    origins: Dict[str, np.ndarray] = field(default_factory=dict)


def check_config(settings) -> TrainConfig:
    """The TrainConfig of a dict of settings (a checkpoint's), every setting
    checked: ValueError names the first one missing, unknown or out of range."""
    if not isinstance(settings, dict):
        raise ValueError(f"'config': expected a dict of settings, "
                         f"but got a {type(settings).__name__}")
    names = [f.name for f in fields(TrainConfig)]
    for name in settings:
        if name not in names:
            raise ValueError(f"'config': unknown setting {brief(name)}")
    for name in names:
        if name not in settings:
            raise ValueError(f"'config': setting '{name}' is missing")
        value = settings[name]
        if name in LIMITS:
            _check(f"config '{name}'", LIMITS[name], value)
        elif not (isinstance(value, str) or (value is None and name != "out")):
            raise ValueError(f"config '{name}': expected text{'' if name == 'out' else ' or None'}"
                             f", but got {brief(value)}")
    return TrainConfig(**settings)


def _check(what: str, limit: Limit, value):
    try:
        return limit.check(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def prepare(cfg: TrainConfig) -> Prepared:
    check_config(asdict(cfg))
    series = data.load_series(cfg.csv, cfg.column, cfg.time_column)
    split = data.split_series(len(series))
    data.check_long_enough(series, split, cfg.window, cfg.horizon)
    data.check_season(series, split, cfg.season)
    scaler = data.Scaler.fit(series.values[:split.train_end], cfg.horizon)
    data.check_scaled(series, scaler)
    prep = Prepared(series, split, scaler)
    for part in ("train", "val", "test"):
        origins = data.window_origins(split, cfg.window, cfg.horizon, part)
        x, y = data.make_windows(series.values, origins, cfg.window, cfg.horizon)
        inputs = np.diff(x, axis=1)[:, :, None] / scaler.scale
        targets = (y - x[:, -1:]) / scaler.target_scale
        prep.tensors[part] = [torch.tensor(inputs, dtype=torch.float32),
                              torch.tensor(targets, dtype=torch.float32)]
        prep.origins[part] = origins
    return prep


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


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


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
                         f"{_first_line(exc)})") from None
    try:
        check_checkpoint(ckpt)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return ckpt


def check_checkpoint(ckpt) -> TrainConfig:
    """Raises ValueError unless ``ckpt`` is a complete lstm_ext checkpoint whose
    parts fit together: its config, the weights built from that config, the
    optimizer and generator states, scaling and history. Returns the config."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not an lstm_ext checkpoint (expected format '{CHECKPOINT_FORMAT}')")
    for key in CHECKPOINT_KEYS:
        if key not in ckpt:
            raise ValueError(f"not a complete checkpoint: '{key}' is missing")
    cfg = check_config(ckpt["config"])
    scaler = ckpt["scaler"]
    if not isinstance(scaler, dict) or sorted(scaler) != ["scale", "target_scale"]:
        raise ValueError(f"'scaler': expected a dict with 'scale' and 'target_scale', "
                         f"but got a {type(scaler).__name__}")
    for key, value in scaler.items():
        _check(f"scaler '{key}'", LIMITS[key], value)
    epoch = _check("'epoch'", Limit(int, 1), ckpt["epoch"])
    _check("'best_epoch'", Limit(int, 1, epoch), ckpt["best_epoch"])
    _check("'best_val_loss'", Limit(float, 0.0), ckpt["best_val_loss"])
    _check_history(ckpt["history"], epoch)
    for key in ("best_state", "model_state"):  # before building a model of that size
        _check_weights(ckpt[key], cfg, key)
    with torch.random.fork_rng(devices=[]):  # building models draws random numbers
        model, optimizer, generator = _training_objects(cfg)
    _restore(ckpt, cfg, model, optimizer, generator)
    return cfg


def _check_history(history, epochs: int) -> None:
    def fits(k, entry):
        return (isinstance(entry, dict) and entry.get("epoch") == k + 1
                and all(Limit(float, 0.0).allows(entry.get(key))
                        for key in ("train_loss", "val_loss")))

    if not (isinstance(history, list) and len(history) == epochs
            and all(fits(k, entry) for k, entry in enumerate(history))):
        raise ValueError(f"'history': expected a list of the {epochs} epochs' 'epoch', "
                         f"'train_loss' and 'val_loss', but got {brief(history)}")


def build_model(cfg: TrainConfig, device=None) -> LSTMModel:
    return LSTMModel(1, cfg.hidden_size, cfg.horizon, num_layers=cfg.num_layers, device=device)


def _training_objects(cfg: TrainConfig) -> Tuple[LSTMModel, torch.optim.Optimizer, torch.Generator]:
    model = build_model(cfg)
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

    if not (isinstance(state, dict) and all(is_weight(v) for v in state.values())):
        raise ValueError(f"'{key}': expected a dict of float tensors, but got {brief(state)}")
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


def _restore(ckpt: dict, cfg: TrainConfig, model: LSTMModel, optimizer: torch.optim.Optimizer,
             generator: torch.Generator) -> None:
    """Loads a checkpoint's training state into a fresh model, optimizer and
    generator (see ``_training_objects``); ValueError says which part does not fit."""
    _load_weights(model, ckpt["model_state"], cfg, "model_state")
    settings = [{k: v for k, v in group.items() if k != "params"}
                for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer_state"])
        _check_optimizer(optimizer, settings)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        raise ValueError(f"its optimizer state does not fit its weights and config: "
                         f"{_first_line(exc)}") from None
    try:
        generator.set_state(ckpt["generator_state"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"'generator_state': not a random generator's state: "
                         f"{_first_line(exc)}") from None


def _check_optimizer(optimizer: torch.optim.Optimizer, settings: List[dict]) -> None:
    """After load_state_dict: the settings (lr, betas, ...) must be those the
    config gives, and the moment estimates finite and shaped as the weights."""
    for group, wanted in zip(optimizer.param_groups, settings):
        for key, value in wanted.items():
            if group.get(key) != value:
                raise ValueError(f"'{key}' is {brief(group.get(key))}, expected {brief(value)}")
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if not torch.is_tensor(value) or not torch.isfinite(value).all():
                    raise ValueError(f"'{name}' is {brief(value)}, expected finite numbers")
                if value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(f"'{name}' has shape {list(value.shape)}, "
                                     f"expected {list(param.shape)}")


def forecaster_from_checkpoint(ckpt: dict) -> Forecaster:
    """The best weights of a checkpoint from ``load_checkpoint``, as a Forecaster."""
    cfg = TrainConfig(**ckpt["config"])
    model = build_model(cfg)
    _load_weights(model, ckpt["best_state"], cfg, "best_state")
    model.eval()
    return Forecaster(model, ckpt["scaler"]["scale"], ckpt["scaler"]["target_scale"],
                      cfg.window, cfg.horizon).eval()


def seasonal_naive(values: np.ndarray, origins: np.ndarray, horizon: int,
                   season: int) -> np.ndarray:
    """For each origin t and lead 1..horizon, the value whole seasons before the
    target that lies at or before t (never a value after the origin)."""
    leads = np.arange(1, horizon + 1)
    seasons_back = np.ceil(leads / season).astype(np.int64) * season
    return values[origins[:, None] + leads[None, :] - seasons_back[None, :]]


def evaluate(prep: Prepared, forecaster: Forecaster, cfg: TrainConfig) -> Dict[str, Dict[str, float]]:
    """MAE and RMSE in original units over every test window and lead time."""
    values = prep.series.values
    origins = prep.origins["test"]
    x, y = data.make_windows(values, origins, cfg.window, cfg.horizon)
    with torch.no_grad():
        model_pred = forecaster(torch.tensor(x[:, :, None], dtype=torch.float32)).double().numpy()
    preds = {
        "lstm": model_pred,
        "persistence": np.repeat(x[:, -1:], cfg.horizon, axis=1),
        f"seasonal_naive_{cfg.season}": seasonal_naive(values, origins, cfg.horizon, cfg.season),
    }
    return {name: {"mae": float(np.mean(np.abs(p - y))),
                   "rmse": float(np.sqrt(np.mean((p - y) ** 2)))} for name, p in preds.items()}


def plot(prep: Prepared, forecaster: Forecaster, cfg: TrainConfig, history: List[dict],
         out: str) -> List[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values, series = prep.series.values, prep.series
    start = prep.split.val_end
    origins = np.arange(start - 1, len(values) - cfg.horizon, cfg.horizon)
    x, _ = data.make_windows(values, origins, cfg.window, cfg.horizon)
    with torch.no_grad():
        pred = forecaster(torch.tensor(x[:, :, None], dtype=torch.float32)).numpy()
    seasonal = seasonal_naive(values, origins, cfg.horizon, cfg.season)
    axis = series.times if series.times is not None else np.arange(len(values))
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(axis[start:], values[start:], color="black", lw=1.2, label="actual")
    for k, t0 in enumerate(origins):
        span = slice(t0 + 1, t0 + 1 + cfg.horizon)
        ax.plot(axis[span], pred[k], color="tab:blue", lw=1.5, label="LSTM forecast" if k == 0 else None)
        ax.plot(axis[span], seasonal[k], color="tab:orange", lw=1, ls="--",
                label=f"seasonal naive ({cfg.season})" if k == 0 else None)
    ax.set_title(f"{series.source} [{series.column}]: test period, {cfg.horizon}-step forecasts "
                 f"from every {cfg.horizon}th step")
    ax.set_ylabel(series.column)
    ax.legend()
    fig.tight_layout()
    forecast_png = os.path.join(out, "forecast.png")
    fig.savefig(forecast_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="training loss")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (standardised)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    curves_png = os.path.join(out, "curves.png")
    fig.savefig(curves_png, dpi=110)
    plt.close(fig)
    return [forecast_png, curves_png]


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
        raise ValueError(f"{path}: not a JSON file ({_first_line(exc)})") from None
    if not isinstance(meta, dict):
        kinds = {list: "an array", str: "a string", bool: "true or false", int: "a number",
                 float: "a number", type(None): "null"}
        raise ValueError(f"{path}: expected a JSON object with the model's settings, "
                         f"but found {kinds.get(type(meta), type(meta).__name__)}")
    for key in ("window", "horizon"):
        if key not in meta:
            raise ValueError(f"{path}: '{key}' is missing")
        _check(f"{path}: '{key}'", LIMITS[key], meta[key])
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
            f"not a TorchScript model file ({_first_line(exc)})"
        raise ValueError(f"{path}: {what}") from None
    meta_path = os.path.splitext(path)[0] + ".json"
    meta = load_meta(meta_path)
    for key in ("window", "horizon"):
        if meta[key] != getattr(module, key):
            raise ValueError(f"{meta_path}: {key} {meta[key]} does not match "
                             f"{key} {getattr(module, key)} of {path}")
    return module, meta


def _changed_settings(saved: dict, cfg: TrainConfig) -> List[str]:
    """The settings a resumed run may not change (all but epochs and out, which
    names the folder the checkpoint was found in, however spelled)."""
    return [f"{name} {brief(saved[name])}, now {brief(value)}"
            for name, value in asdict(cfg).items()
            if name not in ("epochs", "out") and saved[name] != value]


def run(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    make_out_dir(cfg.out)
    prep = prepare(cfg)
    series = prep.series
    log = (lambda *a: None) if quiet else print
    log(f"data: {series.source} [{series.column}], {len(series)} values"
        + (f", {series.filled} missing filled by interpolation in time" if series.filled else "")
        + f"; split train/val/test = {prep.split.train_end}/"
          f"{prep.split.val_end - prep.split.train_end}/{prep.split.n - prep.split.val_end}")

    torch.manual_seed(cfg.seed)
    model, optimizer, generator = _training_objects(cfg)
    history: List[dict] = []
    best = {"val_loss": math.inf, "epoch": 0, "state": None}
    start_epoch = 0
    ckpt_path = os.path.join(cfg.out, CHECKPOINT)
    if resume and os.path.exists(ckpt_path):
        ckpt = load_checkpoint(ckpt_path)
        changed = _changed_settings(ckpt["config"], cfg)
        if changed:
            raise ValueError(f"{ckpt_path}: was written with other settings "
                             f"({'; '.join(changed)}); remove it or run without --resume")
        _restore(ckpt, cfg, model, optimizer, generator)
        history = ckpt["history"]
        best = {"val_loss": ckpt["best_val_loss"], "epoch": ckpt["best_epoch"],
                "state": ckpt["best_state"]}
        start_epoch = ckpt["epoch"]
        log(f"resuming from {ckpt_path} after epoch {start_epoch}")

    x_train, y_train = prep.tensors["train"]
    x_val, y_val = prep.tensors["val"]
    loss_fn = nn.MSELoss()
    epochs = tqdm(range(start_epoch, cfg.epochs), initial=start_epoch, total=cfg.epochs,
                  desc="training", unit="epoch", disable=quiet)
    for epoch in epochs:
        if epoch - best["epoch"] >= cfg.patience and best["state"] is not None:
            break
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(x_val), y_val).item()
        if not (math.isfinite(total) and math.isfinite(val_loss)):
            if best["state"] is None:
                raise ValueError(f"training diverged in epoch {epoch + 1} (training loss "
                                 f"{total / len(x_train):.3g}, validation loss {val_loss:.3g}); "
                                 "try a smaller --lr")
            log(f"\ntraining diverged in epoch {epoch + 1}; keeping epoch {best['epoch']}, "
                "the best before")
            break
        history.append({"epoch": epoch + 1, "train_loss": total / len(x_train),
                        "val_loss": val_loss})
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "epoch": epoch + 1,
                    "state": {k: v.clone() for k, v in model.state_dict().items()}}
        epochs.set_postfix(loss=f"{total / len(x_train):.4f}", val=f"{val_loss:.4f}",
                           best=best["epoch"])
        save_atomic({
            "format": CHECKPOINT_FORMAT, "config": asdict(cfg), "epoch": epoch + 1,
            "model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(),
            "generator_state": generator.get_state(), "history": history,
            "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
            "best_state": best["state"], "scaler": prep.scaler.to_dict(),
        }, ckpt_path)
    epochs.close()
    if best["state"] is None:
        raise ValueError("no epoch was trained (check --epochs)")

    ckpt = load_checkpoint(ckpt_path)
    forecaster = forecaster_from_checkpoint(ckpt)
    metrics = evaluate(prep, forecaster, cfg)
    log(f"\nbest epoch {best['epoch']} (validation loss {best['val_loss']:.4f}); "
        f"test part, {len(prep.origins['test'])} windows x {cfg.horizon} steps, original units:")
    log(f"{'method':<22}{'MAE':>10}{'RMSE':>10}")
    for name, m in metrics.items():
        log(f"{name:<22}{m['mae']:>10.4f}{m['rmse']:>10.4f}")
    baselines = [m["mae"] for name, m in metrics.items() if name != "lstm"]
    beats = metrics["lstm"]["mae"] < min(baselines)
    log("the LSTM " + ("beats" if beats else "does NOT beat") + " every baseline on test MAE")

    pngs = plot(prep, forecaster, cfg, ckpt["history"], cfg.out)
    times = series.times
    meta = {
        "format": "lstm_ext.forecaster/1", "source": series.source, "column": series.column,
        "time_column": cfg.time_column if cfg.csv else data.DEFAULT_TIME_COLUMN,
        "window": cfg.window, "horizon": cfg.horizon, "season": cfg.season,
        **prep.scaler.to_dict(), "input_size": 1,
        "last_time": str(times[-1].date()) if times is not None else None,
        "time_step_days": float(np.median(np.diff(times.values)) / np.timedelta64(1, "D"))
        if times is not None and len(times) > 1 else None,
        "filled_missing": series.filled, "best_epoch": best["epoch"], "test_metrics": metrics,
    }
    model_path = export(forecaster, meta, cfg.out)
    np.savetxt(os.path.join(cfg.out, "last_window.csv"), series.values[-cfg.window:], fmt="%.6f",
               header=series.column, comments="")
    result = {"metrics": metrics, "beats_baselines": beats, "best_epoch": best["epoch"],
              "epochs_run": len(ckpt["history"]), "filled_missing": series.filled}
    with open(os.path.join(cfg.out, METRICS_FILE), "w") as f:
        json.dump(result, f, indent=2)
    log(f"\nwrote {os.path.join(cfg.out, METRICS_FILE)}, {pngs[0]}, {pngs[1]},\n"
        f"      {model_path} (TorchScript) and {os.path.join(cfg.out, META_FILE)}")
    return result
