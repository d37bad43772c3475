"""How good a trained forecaster is: its errors on the test part beside those
of the baselines (``baselines``: persistence, seasonal naive, ETS, auto-ARIMA),
all on the same windows and lead times, in the same units; its prediction
intervals (conformal, from validation residuals per lead time) and their
coverage on the test part; the report of them (a table, metrics.json), and
the plots (forecast.png, curves.png)."""
import json
import math
import os
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from . import baselines
from .baselines import seasonal_naive  # noqa: F401  (kept where it was)
from .settings import TrainConfig
from .windows import Prepared, make_windows

LEVELS = (80, 95)


def predict(forecaster, values: np.ndarray, origins: np.ndarray, window: int,
            horizon: int) -> np.ndarray:
    """The forecaster's forecasts (origins, horizon) in original units."""
    x, _ = make_windows(values, origins, window, horizon)
    with torch.no_grad():
        return forecaster(torch.tensor(x[:, :, None], dtype=torch.float32)).double().numpy()


def mase_scale(train: np.ndarray, season: int) -> float:
    """MASE's denominator: the in-sample MAE of the (seasonal) naive forecast
    on the training part."""
    m = season if season > 1 and len(train) > season else 1
    scale = float(np.mean(np.abs(train[m:] - train[:-m]))) if len(train) > m else 0.0
    return scale or 1.0


def scores(pred: np.ndarray, actual: np.ndarray, scale: float, axis=None) -> Dict[str, object]:
    """MAE, RMSE, MASE and sMAPE (percent) over all of ``axis`` (None: every
    window and lead; 0: per lead time, as lists)."""
    err = pred - actual
    denom = np.abs(pred) + np.abs(actual)
    smape = np.where(denom > 0, 2 * np.abs(err) / np.where(denom > 0, denom, 1), 0.0)
    out = {"mae": np.mean(np.abs(err), axis=axis),
           "rmse": np.sqrt(np.mean(err ** 2, axis=axis)),
           "mase": np.mean(np.abs(err), axis=axis) / scale,
           "smape": 100 * np.mean(smape, axis=axis)}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in out.items()}


def conformal(residuals: np.ndarray, levels=LEVELS) -> Dict[str, List[float]]:
    """Split-conformal half-widths per lead time: for each level, the k-th
    smallest absolute residual of the n validation windows, k = ceil((n + 1)
    level) (the largest where that exceeds n)."""
    ordered = np.sort(np.abs(residuals), axis=0)
    n = len(ordered)
    out = {}
    for level in levels:
        k = min(n, math.ceil((n + 1) * level / 100))
        out[str(level)] = ordered[k - 1].tolist()
    return out


def widths_for(intervals: Dict[str, List[float]], steps: int) -> Dict[str, np.ndarray]:
    """Half-widths for leads 1..steps: the calibrated ones up to the horizon,
    beyond it the last one grown with the square root of the lead (as a random
    walk's error grows)."""
    out = {}
    for level, w in intervals.items():
        w = np.asarray(w, dtype=float)
        h = len(w)
        leads = np.arange(1, steps + 1)
        out[level] = np.where(leads <= h, w[np.minimum(leads, h) - 1],
                              w[-1] * np.sqrt(leads / h))
    return out


def evaluate(prep: Prepared, forecaster, cfg: TrainConfig, info: Optional[dict] = None,
             statistical: bool = True) -> dict:
    """Test metrics of the LSTM and every baseline over every test window and
    lead time; the LSTM's intervals (from validation) and their test coverage."""
    values = prep.series.values
    origins = prep.origins["test"]
    _, y = make_windows(values, origins, cfg.window, cfg.horizon)
    preds = {"lstm": predict(forecaster, values, origins, cfg.window, cfg.horizon)}
    theta_info: dict = {}
    preds.update(baselines.all_baselines(values, prep.split.val_end, origins, cfg.horizon,
                                         cfg.season, cfg.period, info, statistical, theta_info))
    scale = mase_scale(values[:prep.split.train_end], cfg.season)
    metrics = {name: scores(p, y, scale) for name, p in preds.items()}
    val_origins = prep.origins["val"]
    _, y_val = make_windows(values, val_origins, cfg.window, cfg.horizon)
    residuals = predict(forecaster, values, val_origins, cfg.window, cfg.horizon) - y_val
    intervals = conformal(residuals)
    coverage = {level: float(np.mean(np.abs(preds["lstm"] - y) <= np.asarray(w)[None, :]))
                for level, w in intervals.items()}
    return {"metrics": metrics, "intervals": intervals, "coverage": coverage,
            "per_lead": {name: scores(p, y, scale, axis=0) for name, p in preds.items()},
            "preds": preds, "theta": theta_info}


def verdict(metrics: Dict[str, Dict[str, float]]) -> str:
    """Which method is best on test MAE, and whether the LSTM beats every baseline."""
    best = min(metrics, key=lambda name: metrics[name]["mae"])
    lstm = metrics["lstm"]["mae"]
    if best == "lstm":
        return "best on test MAE: lstm; the LSTM beats every baseline"
    better = [name for name, m in metrics.items() if name != "lstm" and m["mae"] <= lstm]
    return (f"best on test MAE: {best}; the LSTM does NOT beat "
            f"{', '.join(sorted(better, key=lambda n: metrics[n]['mae']))}")


def report(result: dict, best: dict, prep: Prepared, cfg: TrainConfig,
           log: Callable[..., None], arima: Optional[dict] = None) -> bool:
    """Logs the test metrics as a table after the best epoch (``best``: its
    "epoch" and "val_loss"), the intervals' coverage and the verdict; returns
    whether the LSTM beats every baseline on test MAE."""
    metrics = result["metrics"]
    log(f"\nbest epoch {best['epoch']} (validation loss {best['val_loss']:.4f}); "
        f"test part, {len(prep.origins['test'])} windows x {cfg.horizon} steps, original units:")
    log(f"{'method':<22}{'MAE':>10}{'RMSE':>10}{'MASE':>8}{'sMAPE%':>8}")
    for name, m in metrics.items():
        log(f"{name:<22}{m['mae']:>10.4f}{m['rmse']:>10.4f}{m['mase']:>8.3f}{m['smape']:>8.2f}")
    if arima:
        log(f"(arima: order {tuple(arima['order'])}, {arima['fourier_terms']} Fourier pairs of "
            f"period {arima['period']:.6g}, {'drift' if arima['d'] else 'constant'}; ets: damped trend"
            f"{', season ' + str(cfg.season) if cfg.season > 1 else ''}; "
            + theta_note(result.get("theta")) + "; all fitted before the test part)")
    log("prediction intervals (conformal, validation residuals per lead): test coverage "
        + ", ".join(f"{result['coverage'][k] * 100:.1f}% at nominal {k}%"
                    for k in result["intervals"]))
    text = verdict(metrics)
    log(text)
    return text.endswith("beats every baseline")


def theta_note(info: Optional[dict]) -> str:
    """How the Theta baseline came out, for the report."""
    if not info:
        return "theta"
    season = f"{info['method']} seasonal indices" if info.get("deseasonalised") else \
        "no season (test or data)"
    return f"theta: alpha {info['alpha']:.3g}, slope {info['b0']:.3g}, {season}"


def write_metrics(result: dict, path: str) -> None:
    """A run's results as JSON: metrics.json (its test metrics and how its
    training went), backtest.json."""
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def plot(prep: Prepared, forecaster, cfg: TrainConfig, history: List[dict], out: str,
         intervals: Optional[Dict[str, List[float]]] = None) -> List[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values, series = prep.series.values, prep.series
    start = prep.split.val_end
    origins = np.arange(start - 1, len(values) - cfg.horizon, cfg.horizon)
    pred = predict(forecaster, values, origins, cfg.window, cfg.horizon)
    season = cfg.season if cfg.season > 1 else None
    seasonal = seasonal_naive(values, origins, cfg.horizon, season) if season else None
    axis = series.times if series.times is not None else np.arange(len(values))
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.plot(axis[start:], values[start:], color="black", lw=1.2, label="actual")
    for k, t0 in enumerate(origins):
        span = slice(t0 + 1, t0 + 1 + cfg.horizon)
        for level, alpha in (("95", 0.12), ("80", 0.25)):
            if intervals and level in intervals:
                w = np.asarray(intervals[level])
                ax.fill_between(axis[span], pred[k] - w, pred[k] + w, color="tab:blue",
                                alpha=alpha, lw=0,
                                label=f"{level}% interval" if k == 0 else None)
        ax.plot(axis[span], pred[k], color="tab:blue", lw=1.5,
                label="LSTM forecast" if k == 0 else None)
        if seasonal is not None:
            ax.plot(axis[span], seasonal[k], color="tab:orange", lw=1, ls="--",
                    label=f"seasonal naive ({season})" if k == 0 else None)
    ax.set_title(f"{series.source} [{series.column}]: test period, {cfg.horizon}-step forecasts "
                 f"from every {cfg.horizon}th step")
    ax.set_ylabel(series.column)
    ax.legend()
    fig.tight_layout()
    forecast_png = os.path.join(out, "forecast.png")
    fig.savefig(forecast_png, dpi=110)
    plt.close(fig)
    return [forecast_png, plot_curves(history, out)]


def plot_curves(history: list, out: str) -> str:
    """curves.png: training and validation loss per epoch; returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    return curves_png


def backtest_scores(series, split, test_origins: np.ndarray, forecaster, cfg: TrainConfig,
                    n_origins: int, statistical: bool = True) -> dict:
    """One series' rolling-origin scores: ``n_origins`` forecast origins spread
    evenly over its test part (``test_origins``), with their times where the
    series has them; from each, the LSTM and every
    baseline forecast leads 1..horizon from the data up to that origin (the
    baselines fitted before the test part, ``split.val_end``, their states
    filtered up to the origin). MAE, RMSE, MASE and sMAPE overall and per lead."""
    pick = np.unique(np.linspace(0, len(test_origins) - 1,
                                 min(n_origins, len(test_origins))).round().astype(np.int64))
    origins = test_origins[pick]
    values, times = series.values, series.times
    _, y = make_windows(values, origins, cfg.window, cfg.horizon)
    preds = {"lstm": predict(forecaster, values, origins, cfg.window, cfg.horizon)}
    preds.update(baselines.all_baselines(values, split.val_end, origins, cfg.horizon,
                                         cfg.season, cfg.period, None, statistical))
    scale = mase_scale(values[:split.train_end], cfg.season)
    return {"origins": [int(o) for o in origins],
            "origin_times": [str(times[o]) for o in origins] if times is not None else None,
            "overall": {name: scores(p, y, scale) for name, p in preds.items()},
            "per_lead": {name: scores(p, y, scale, axis=0) for name, p in preds.items()}}


def log_backtest(result: dict, horizon: int, metric: str, log: Callable[..., None]) -> None:
    """The backtest table: ``metric`` per lead for every method, then its
    overall MAE, RMSE, MASE and sMAPE."""
    leads = "".join(f"{k:>8}" for k in range(1, horizon + 1))
    log(f"{'method':<20}{leads}{'MAE':>9}{'RMSE':>9}{'MASE':>7}{'sMAPE':>7}")
    for name in result["overall"]:
        per = "".join(f"{v:>8.3g}" for v in result["per_lead"][name][metric])
        o = result["overall"][name]
        log(f"{name:<20}{per}{o['mae']:>9.4g}{o['rmse']:>9.4g}{o['mase']:>7.3f}"
            f"{o['smape']:>7.2f}")


def plot_backtest(result: dict, horizon: int, metrics, title: str, path: str) -> None:
    """backtest.png: ``metrics`` (pairs of key and axis label) per lead, one
    panel each, a line per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(metrics), figsize=(12, 4), squeeze=False)
    axes = axes[0]
    for ax, (key, label) in zip(axes, metrics):
        for name in result["per_lead"]:
            ax.plot(range(1, horizon + 1), result["per_lead"][name][key], marker="o", ms=3,
                    label=name)
        ax.set_xlabel("lead time (steps)")
        ax.set_ylabel(label)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def backtest(prep: Prepared, forecaster, cfg: TrainConfig, n_origins: int, out: str,
             log: Callable[..., None], statistical: bool = True) -> dict:
    """Rolling-origin evaluation of one series' run (``backtest_scores``): a
    table of MAE per lead, backtest.json and backtest.png."""
    result = backtest_scores(prep.series, prep.split, prep.origins["test"], forecaster, cfg,
                             n_origins, statistical)
    log(f"backtest: {len(result['origins'])} origins over the test part, leads "
        f"1..{cfg.horizon}; MAE per lead (overall MAE, RMSE, MASE, sMAPE% at the right):")
    log_backtest(result, cfg.horizon, "mae", log)
    log(verdict(result["overall"]))
    path = os.path.join(out, "backtest.json")
    write_metrics(result, path)
    png = os.path.join(out, "backtest.png")
    plot_backtest(result, cfg.horizon, (("mae", "MAE"), ("smape", "sMAPE %")),
                  f"{prep.series.source} [{prep.series.column}]: backtest over "
                  f"{len(result['origins'])} origins", png)
    log(f"wrote {path} and {png}")
    return result
