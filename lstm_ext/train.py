"""The main job: train an LSTM forecaster on a series, evaluate it against honest
baselines, plot, and export it for deployment (TorchScript + JSON)."""
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from . import data
from .forecaster import Forecaster
from .model import LSTMModel

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
META_FILE = "model.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_FORMAT = "lstm_ext.checkpoint/1"


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


def prepare(cfg: TrainConfig) -> Prepared:
    if cfg.window < 2 or cfg.horizon < 1:
        raise data.DataError(f"--window must be >= 2 and --horizon >= 1, "
                             f"but got {cfg.window} and {cfg.horizon}")
    series = data.load_series(cfg.csv, cfg.column, cfg.time_column)
    split = data.split_series(len(series))
    data.check_long_enough(series, split, cfg.window, cfg.horizon)
    scaler = data.Scaler.fit(series.values[:split.train_end], cfg.horizon)
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


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an lstm_ext checkpoint (expected format "
                         f"'{CHECKPOINT_FORMAT}')")
    return ckpt


def build_model(cfg: TrainConfig) -> LSTMModel:
    return LSTMModel(1, cfg.hidden_size, cfg.horizon, num_layers=cfg.num_layers)


def forecaster_from_checkpoint(ckpt: dict) -> Forecaster:
    cfg = TrainConfig(**ckpt["config"])
    model = build_model(cfg)
    model.load_state_dict(ckpt["best_state"])
    model.eval()
    return Forecaster(model, ckpt["scaler"]["scale"], ckpt["scaler"]["target_scale"],
                      cfg.window, cfg.horizon).eval()


def evaluate(prep: Prepared, forecaster: Forecaster, cfg: TrainConfig) -> Dict[str, Dict[str, float]]:
    """MAE and RMSE in original units over every test window and lead time."""
    values = prep.series.values
    origins = prep.origins["test"]
    x, y = data.make_windows(values, origins, cfg.window, cfg.horizon)
    with torch.no_grad():
        model_pred = forecaster(torch.tensor(x[:, :, None], dtype=torch.float32)).double().numpy()
    leads = np.arange(1, cfg.horizon + 1)
    seasons_back = np.ceil(leads / cfg.season).astype(np.int64) * cfg.season
    seasonal_idx = origins[:, None] + leads[None, :] - seasons_back[None, :]
    preds = {
        "lstm": model_pred,
        "persistence": np.repeat(x[:, -1:], cfg.horizon, axis=1),
        f"seasonal_naive_{cfg.season}": values[seasonal_idx],
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
    axis = series.times if series.times is not None else np.arange(len(values))
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(axis[start:], values[start:], color="black", lw=1.2, label="actual")
    for k, t0 in enumerate(origins):
        span = slice(t0 + 1, t0 + 1 + cfg.horizon)
        seasonal = values[t0 + 1 - cfg.season: t0 + 1 - cfg.season + cfg.horizon]
        ax.plot(axis[span], pred[k], color="tab:blue", lw=1.5, label="LSTM forecast" if k == 0 else None)
        ax.plot(axis[span], seasonal, color="tab:orange", lw=1, ls="--",
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


def run(cfg: TrainConfig, resume: bool = False, quiet: bool = False) -> dict:
    os.makedirs(cfg.out, exist_ok=True)
    prep = prepare(cfg)
    series = prep.series
    log = (lambda *a: None) if quiet else print
    log(f"data: {series.source} [{series.column}], {len(series)} values"
        + (f", {series.filled} missing filled by interpolation in time" if series.filled else "")
        + f"; split train/val/test = {prep.split.train_end}/"
          f"{prep.split.val_end - prep.split.train_end}/{prep.split.n - prep.split.val_end}")

    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: List[dict] = []
    best = {"val_loss": math.inf, "epoch": 0, "state": None}
    start_epoch = 0
    ckpt_path = os.path.join(cfg.out, CHECKPOINT)
    if resume and os.path.exists(ckpt_path):
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["config"] != asdict(cfg) | {"epochs": ckpt["config"]["epochs"]}:
            raise ValueError(f"{ckpt_path}: was written with other settings "
                             f"({ckpt['config']}); remove it or run without --resume")
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ckpt["optimizer_state"])
        generator.set_state(ckpt["generator_state"])
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
