"""How good a trained forecaster is: its errors on the test part beside those
of two honest baselines (persistence and seasonal naive), the report of them
(a table, metrics.json), and the plots (forecast.png, curves.png)."""
import json
import os
from typing import Callable, Dict, List

import numpy as np
import torch

from .forecaster import Forecaster
from .settings import TrainConfig
from .windows import Prepared, make_windows


def seasonal_naive(values: np.ndarray, origins: np.ndarray, horizon: int,
                   season: int) -> np.ndarray:
    """For each origin t and lead 1..horizon, the value whole seasons before the
    target that lies at or before t (never a value after the origin)."""
    leads = np.arange(1, horizon + 1)
    seasons_back = np.ceil(leads / season).astype(np.int64) * season
    return values[origins[:, None] + leads[None, :] - seasons_back[None, :]]


def evaluate(prep: Prepared, forecaster: Forecaster, cfg: TrainConfig
             ) -> Dict[str, Dict[str, float]]:
    """MAE and RMSE in original units over every test window and lead time."""
    values = prep.series.values
    origins = prep.origins["test"]
    x, y = make_windows(values, origins, cfg.window, cfg.horizon)
    with torch.no_grad():
        model_pred = forecaster(torch.tensor(x[:, :, None], dtype=torch.float32)).double().numpy()
    preds = {
        "lstm": model_pred,
        "persistence": np.repeat(x[:, -1:], cfg.horizon, axis=1),
        f"seasonal_naive_{cfg.season}": seasonal_naive(values, origins, cfg.horizon, cfg.season),
    }
    return {name: {"mae": float(np.mean(np.abs(p - y))),
                   "rmse": float(np.sqrt(np.mean((p - y) ** 2)))} for name, p in preds.items()}


def report(metrics: Dict[str, Dict[str, float]], best: dict, prep: Prepared, cfg: TrainConfig,
           log: Callable[..., None]) -> bool:
    """Logs the test metrics as a table after the best epoch (``best``: its
    "epoch" and "val_loss"); returns whether the LSTM beats every baseline on
    test MAE."""
    log(f"\nbest epoch {best['epoch']} (validation loss {best['val_loss']:.4f}); "
        f"test part, {len(prep.origins['test'])} windows x {cfg.horizon} steps, original units:")
    log(f"{'method':<22}{'MAE':>10}{'RMSE':>10}")
    for name, m in metrics.items():
        log(f"{name:<22}{m['mae']:>10.4f}{m['rmse']:>10.4f}")
    baselines = [m["mae"] for name, m in metrics.items() if name != "lstm"]
    beats = metrics["lstm"]["mae"] < min(baselines)
    log("the LSTM " + ("beats" if beats else "does NOT beat") + " every baseline on test MAE")
    return beats


def write_metrics(result: dict, path: str) -> None:
    """metrics.json: a run's test metrics and how its training went."""
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def plot(prep: Prepared, forecaster: Forecaster, cfg: TrainConfig, history: List[dict],
         out: str) -> List[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values, series = prep.series.values, prep.series
    start = prep.split.val_end
    origins = np.arange(start - 1, len(values) - cfg.horizon, cfg.horizon)
    x, _ = make_windows(values, origins, cfg.window, cfg.horizon)
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
