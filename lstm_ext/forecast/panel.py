"""Several series, one global model: a long-format CSV file (columns
``unique_id, ds, y``, one row per series and time).

Every series is split by time as one series is (70/15/15, ``split_series``),
its windows drawn as one series' are, and all of them pooled to train one
Forecaster. So that one model fits series of any level and size, each window
is scaled by itself inside the model (``Forecaster(per_window=True)``):
``z = (x - last) / s``, ``s`` the window's mean absolute change; the hybrid's
ridge part and the LSTM work on ``z`` and the forecast is ``last + s *
forecast(z)``. The exported model keeps the single-series contract
(``forward(x (batch, steps, 1) raw) -> (batch, horizon) raw``); model.json
says ``"per_window": true``. Prediction intervals are split-conformal on the
pooled validation residuals in those units: a half-width is ``s`` times
``intervals[level][lead]``.

Evaluation is per series (the LSTM and every baseline, each baseline fitted
on that series alone before its test part) and overall: the mean over series
of each metric; the overall verdict is on the mean MASE (MAE and RMSE are in
each series' own units, so their means are dominated by the largest series).
"""
import os
import re
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from . import baselines, frequency
from .evaluation import (LEVELS, backtest_scores, conformal, log_backtest, mase_scale,
                         plot_backtest, plot_curves, predict, scores, theta_note, verdict,
                         write_metrics)
from .series import DataError, Series, load_panel
from .settings import RUNS, TrainConfig, check_config
from .windows import (FEATURE_SETS, RIDGE, Prepared, Scaler, Split, _ridge, check_long_enough,
                      check_scaled, check_season, linear_features, make_windows, resolve,
                      split_series, window_origins)


@dataclass
class Member:
    """One series of a panel: the series, its split and its windows' origins."""
    series: Series
    split: Split
    origins: Dict[str, np.ndarray]

    @property
    def name(self) -> str:
        return str(self.series.uid)


def window_scale(x: np.ndarray) -> np.ndarray:
    """(N, 1): each window's mean absolute change (0 for a flat window), as
    ``Forecaster._per_window`` computes it."""
    return np.mean(np.abs(np.diff(x, axis=1)), axis=1, keepdims=True)


def normalise(x: np.ndarray, y: np.ndarray):
    """Windows and targets put on the windows' own scale: (z, y_z, moving),
    moving marking the windows that are not flat (the others are left out of
    the fit: the model forecasts their last value)."""
    s = window_scale(x)
    moving = s[:, 0] > 0
    s = np.where(s > 0, s, 1.0)
    last = x[:, -1:]
    return (x - last) / s, (y - last) / s, moving


def _same_calendar(s: Series, freq: str, first: Member, given: bool) -> Series:
    """``s`` on the calendar of ``freq`` (the first series' frequency, or
    ``--freq`` if ``given``: then missing times are filled); DataError if its
    own frequency differs (adding times would invent values)."""
    if given:
        return frequency.regularise(s, freq)
    own = frequency.infer_freq(s.times, s.source, str(s.time_column))
    problem = None
    try:
        moved = frequency.regularise(s, freq)
        if own != freq and len(moved) != len(s):
            problem = "a different one"
    except DataError:
        problem = "not on its calendar"
    if problem:
        raise DataError(f"{s.source}: frequency {own}, but series '{first.name}' has {freq} "
                        f"({problem}): one model needs one frequency across series; put "
                        "every series on one calendar, or give --freq to fill missing times")
    return moved


def _fit_linear(z_tr, y_tr, z_val, y_val) -> dict:
    """The ridge part on pooled scaled windows: feature set and penalty chosen on
    the validation windows, then refitted on training + validation."""
    best = None
    f_tr, f_val = linear_features(z_tr), linear_features(z_val)
    for use in FEATURE_SETS:
        for ridge in RIDGE:
            mae = float(np.mean(np.abs(f_val @ _ridge(f_tr, y_tr, ridge, use) - y_val)))
            if best is None or mae < best["val_mae"]:
                best = {"ridge": ridge, "features": use, "val_mae": mae}
    best["weights"] = _ridge(np.concatenate([f_tr, f_val]), np.concatenate([y_tr, y_val]),
                             best["ridge"], best["features"])
    return best


def out_folder(csv: str) -> str:
    stem = os.path.splitext(os.path.basename(csv))[0]
    return os.path.join(RUNS, re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "run")


def prepare_panel(cfg: TrainConfig) -> Prepared:
    """``windows.prepare`` for a long-format file: its series, each checked,
    split and windowed; the settings from their (common) frequency; the
    per-window-scaled windows of all series pooled into the model's tensors."""
    members_series = load_panel(cfg.csv)
    given = cfg
    first_cfg, first, notes = resolve(cfg, members_series[0])
    if cfg.out is None:
        first_cfg = replace(first_cfg, out=out_folder(cfg.csv))
    cfg = first_cfg
    check_config(asdict(cfg))
    members: List[Member] = []
    for k, s in enumerate(members_series):
        if k > 0:
            if s.times is not None and cfg.freq is not None:
                s = _same_calendar(s, cfg.freq, members[0], given.freq is not None)
                s.freq = cfg.freq
        else:
            s = first
        split = split_series(len(s))
        check_long_enough(s, split, cfg.window, cfg.horizon)
        check_season(s, split, cfg.season, given.season is not None)
        check_scaled(s, Scaler.fit(s.values[:split.train_end], cfg.horizon))
        members.append(Member(s, split, {part: window_origins(split, cfg.window, cfg.horizon,
                                                               part)
                                         for part in ("train", "val", "test")}))
    pooled = {}
    for part in ("train", "val", "test"):
        zs, ys = [], []
        for m in members:
            x, y = make_windows(m.series.values, m.origins[part], cfg.window, cfg.horizon)
            z, yz, moving = normalise(x, y)
            zs.append(z[moving])
            ys.append(yz[moving])
        pooled[part] = (np.concatenate(zs), np.concatenate(ys))
    z_tr, y_tr = pooled["train"]
    if len(z_tr) == 0 or len(pooled["val"][0]) == 0:
        raise DataError(f"{os.path.basename(cfg.csv)}: every training or validation window "
                        "is flat (no changes): nothing to learn from")
    linear = _fit_linear(z_tr, y_tr, *pooled["val"])
    scale = float(np.std(np.diff(z_tr, axis=1))) or 1.0
    residual = y_tr - linear_features(z_tr) @ linear["weights"]
    scaler = Scaler(scale, float(np.sqrt(np.mean(residual ** 2))) or 1.0, per_window=True)
    notes.append(f"series: {len(members)} ({', '.join(m.name for m in members[:8])}"
                 f"{', ...' if len(members) > 8 else ''}), each split 70/15/15 by time; one "
                 "global model, every window scaled by its own mean absolute change")
    notes.append(f"model: ridge regression on the scaled window's {linear['features']} "
                 f"(penalty {linear['ridge']:g} chosen on validation, then fitted on training + "
                 "validation) + LSTM on its residual (trained on the training part, epochs "
                 "chosen on validation)")
    prep = Prepared(first, members[0].split, scaler, cfg=cfg, linear=linear["weights"],
                    notes=notes, seasonal=None, panel=members)
    for part, (z, yz) in pooled.items():
        base = linear_features(z) @ linear["weights"]
        inputs = np.diff(z, axis=1)[:, :, None] / scale
        prep.tensors[part] = [torch.tensor(inputs, dtype=torch.float32),
                              torch.tensor((yz - base) / scaler.target_scale,
                                           dtype=torch.float32)]
        prep.origins[part] = np.arange(len(z))
    return prep


def describe(prep: Prepared) -> str:
    """The data line of the training log."""
    members = prep.panel
    filled = sum(m.series.filled for m in members)
    counts = [len(prep.tensors[p][0]) for p in ("train", "val", "test")]
    return (f"data: {os.path.basename(prep.cfg.csv)}, {len(members)} series, "
            f"{sum(len(m.series) for m in members)} values"
            + (f", {filled} missing filled by interpolation in time" if filled else "")
            + "; windows train/val/test = {}/{}/{}".format(*counts))


def evaluate(prep: Prepared, forecaster, cfg: TrainConfig, statistical: bool = True) -> dict:
    """Per series: the test metrics of the LSTM and every baseline (fitted on
    that series before its test part), the intervals' coverage; overall: the
    mean of each metric over series, and coverage over all test windows."""
    W, H = cfg.window, cfg.horizon
    per_series, residuals, tests = {}, [], []
    for m in prep.panel:
        values = m.series.values
        xv, yv = make_windows(values, m.origins["val"], W, H)
        sv = window_scale(xv)
        pv = predict(forecaster, values, m.origins["val"], W, H)
        keep = sv[:, 0] > 0
        residuals.append((pv - yv)[keep] / sv[keep])
        origins = m.origins["test"]
        x, y = make_windows(values, origins, W, H)
        preds = {"lstm": predict(forecaster, values, origins, W, H)}
        arima, theta = {}, {}
        preds.update(baselines.all_baselines(values, m.split.val_end, origins, H, cfg.season,
                                             cfg.period, arima, statistical, theta))
        scale = mase_scale(values[:m.split.train_end], cfg.season)
        per_series[m.name] = {
            "windows": int(len(origins)),
            "metrics": {name: scores(p, y, scale) for name, p in preds.items()},
            "per_lead": {name: scores(p, y, scale, axis=0) for name, p in preds.items()},
            "arima": arima, "theta": theta}
        tests.append((m.name, np.abs(preds["lstm"] - y), window_scale(x)))
    intervals = conformal(np.concatenate(residuals))
    coverage, hits = {}, {}
    for level, w in intervals.items():
        inside = [err <= s * np.asarray(w)[None, :] for _, err, s in tests]
        for (name, _, _), ok in zip(tests, inside):
            per_series[name].setdefault("coverage", {})[level] = float(np.mean(ok))
        hits[level] = np.concatenate([ok.ravel() for ok in inside])
        coverage[level] = float(np.mean(hits[level]))
    overall = mean_over_series([r["metrics"] for r in per_series.values()])
    return {"metrics": overall, "per_series": per_series, "intervals": intervals,
            "coverage": coverage}


def mean_over_series(per_series: List[Dict[str, Dict[str, object]]]) -> dict:
    """Each method's scores (``evaluation.scores``: numbers, or lists per
    lead) as the mean over series."""
    return {name: {key: np.mean([s[name][key] for s in per_series], axis=0).tolist()
                   for key in ("mae", "rmse", "mase", "smape")} for name in per_series[0]}


def log_per_series(values: Dict[str, Dict[str, float]], counts: Dict[str, int], count: str,
                   log: Callable[..., None]) -> None:
    """A line per series: how many windows or origins (``count``), then each
    method's figure, the best one starred."""
    methods = list(next(iter(values.values())))
    short = {name: name.replace("seasonal_naive_", "snaive_") for name in methods}
    log(f"{'series':<16}{count:>8}" + "".join(f"{short[n]:>13}" for n in methods))
    for name, v in values.items():
        top = min(v, key=v.get)
        log(f"{name[:15]:<16}{counts[name]:>8}" + "".join(
            f"{v[n]:>12.4g}{'*' if n == top else ' '}" for n in methods))


def panel_verdict(overall: Dict[str, Dict[str, float]], n: int) -> str:
    text = verdict({k: {"mae": v["mase"]} for k, v in overall.items()})
    return text.replace("on test MAE", f"on mean test MASE over {n} series")


def report(result: dict, best: dict, prep: Prepared, cfg: TrainConfig,
           log: Callable[..., None]) -> bool:
    """The per-series MAE of every method, the overall means, coverage and verdict."""
    per = result["per_series"]
    log(f"\nbest epoch {best['epoch']} (validation loss {best['val_loss']:.4f}); test part of "
        f"each series, windows x {cfg.horizon} steps; MAE per series (own units; * best):")
    log_per_series({name: {k: m["mae"] for k, m in r["metrics"].items()}
                    for name, r in per.items()},
                   {name: r["windows"] for name, r in per.items()}, "windows", log)
    log(f"overall, mean over {len(per)} series:")
    log(f"{'method':<22}{'MAE':>10}{'RMSE':>10}{'MASE':>8}{'sMAPE%':>8}")
    for name, m in result["metrics"].items():
        log(f"{name:<22}{m['mae']:>10.4g}{m['rmse']:>10.4g}{m['mase']:>8.3f}{m['smape']:>8.2f}")
    if any(r["arima"] for r in per.values()):
        first = next(iter(per.items()))
        log(f"(baselines fitted per series before its test part; e.g. {first[0]}: arima order "
            f"{tuple(first[1]['arima']['order'])}, {first[1]['arima']['fourier_terms']} Fourier "
            f"pairs; {theta_note(first[1]['theta'])})")
    log("prediction intervals (conformal, pooled validation residuals per lead, scaled by "
        "each window's mean absolute change): test coverage "
        + ", ".join(f"{result['coverage'][k] * 100:.1f}% at nominal {k}%"
                    for k in result["intervals"]))
    text = panel_verdict(result["metrics"], len(per))
    log(text)
    return text.endswith("beats every baseline")


def backtest(prep: Prepared, forecaster, cfg: TrainConfig, n_origins: int, out: str,
             log: Callable[..., None], statistical: bool = True) -> dict:
    """Rolling-origin evaluation of a panel's run: every series as one series'
    run is (``evaluation.backtest_scores``: its own origins over its own test
    part, its own baselines), then each metric per lead and overall, the mean
    over series. MASE per lead in the table (MAE and RMSE are in each series'
    units, so their means follow the largest series); the verdict on mean MASE,
    as the training report's; backtest.json and backtest.png."""
    per_series = {m.name: backtest_scores(m.series, m.split, m.origins["test"], forecaster, cfg,
                                          n_origins, statistical) for m in prep.panel}
    result = {"overall": mean_over_series([r["overall"] for r in per_series.values()]),
              "per_lead": mean_over_series([r["per_lead"] for r in per_series.values()]),
              "per_series": per_series}
    counts = [len(r["origins"]) for r in per_series.values()]
    span = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    n = len(per_series)
    log(f"backtest: {span} origins over the "
        f"test part of each of {n} series, leads 1..{cfg.horizon}; mean MASE over series per "
        "lead (mean MAE, RMSE, MASE, sMAPE% at the right):")
    log_backtest(result, cfg.horizon, "mase", log)
    log("MASE per series (* best):")
    log_per_series({name: {k: m["mase"] for k, m in r["overall"].items()}
                    for name, r in per_series.items()},
                   {name: len(r["origins"]) for name, r in per_series.items()}, "origins", log)
    log(panel_verdict(result["overall"], n))
    path = os.path.join(out, "backtest.json")
    write_metrics(result, path)
    png = os.path.join(out, "backtest.png")
    plot_backtest(result, cfg.horizon, (("mase", "MASE, mean over series"),
                                        ("smape", "sMAPE %, mean over series")),
                  f"{os.path.basename(cfg.csv)}: backtest of one global model over {n} series",
                  png)
    log(f"wrote {path} and {png}")
    return result


def plot(prep: Prepared, forecaster, cfg: TrainConfig, history: List[dict], out: str,
         intervals: Dict[str, List[float]]) -> List[str]:
    """forecast.png (the test part of up to 4 series, forecasts every horizon
    steps with their intervals) and curves.png (losses per epoch)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = prep.panel[:4]
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 2.6 * len(shown) + 0.5), squeeze=False)
    for ax, m in zip(axes[:, 0], shown):
        values, start = m.series.values, m.split.val_end
        axis = m.series.times if m.series.times is not None else np.arange(len(values))
        origins = np.arange(start - 1, len(values) - cfg.horizon, cfg.horizon)
        x, _ = make_windows(values, origins, cfg.window, cfg.horizon)
        pred = predict(forecaster, values, origins, cfg.window, cfg.horizon)
        s = window_scale(x)
        ax.plot(axis[start:], values[start:], color="black", lw=1.2, label="actual")
        for k, t0 in enumerate(origins):
            span = slice(t0 + 1, t0 + 1 + cfg.horizon)
            for level, alpha in (("95", 0.12), ("80", 0.25)):
                w = s[k] * np.asarray(intervals[level])
                ax.fill_between(axis[span], pred[k] - w, pred[k] + w, color="tab:blue",
                                alpha=alpha, lw=0, label=f"{level}% interval" if k == 0 else None)
            ax.plot(axis[span], pred[k], color="tab:blue", lw=1.5,
                    label="LSTM forecast" if k == 0 else None)
        ax.set_ylabel(m.name)
    axes[0, 0].legend(fontsize=8)
    axes[0, 0].set_title(f"{os.path.basename(cfg.csv)}: test period, {cfg.horizon}-step "
                         f"forecasts of one global model ({len(prep.panel)} series, "
                         f"{len(shown)} shown)")
    fig.tight_layout()
    forecast_png = os.path.join(out, "forecast.png")
    fig.savefig(forecast_png, dpi=110)
    plt.close(fig)
    return [forecast_png, plot_curves(history, out)]


def finish(prep: Prepared, ckpt: dict, ckpt_path: str, forecaster, cfg: TrainConfig,
           best: dict, stopped_early: bool, log, statistical: bool) -> dict:
    """After training a panel: evaluate, report, plot, export; metrics.json."""
    from . import artifacts
    evaluated = evaluate(prep, forecaster, cfg, statistical)
    ckpt["intervals"] = evaluated["intervals"]
    artifacts.save_atomic(ckpt, ckpt_path)
    beats = report(evaluated, best, prep, cfg, log)
    pngs = plot(prep, forecaster, cfg, ckpt["history"], cfg.out, evaluated["intervals"])
    meta = artifacts.model_meta(cfg, prep.scaler.to_dict(), best["epoch"], None,
                                evaluated["metrics"], evaluated["intervals"])
    meta.update(source=os.path.basename(cfg.csv), column="y", time_column="ds",
                long_format={"id_column": "unique_id", "series": [m.name for m in prep.panel],
                             "last_times": {m.name: frequency.time_label(m.series.times[-1],
                                                                         cfg.freq)
                                            for m in prep.panel if m.series.times is not None}},
                filled_missing=sum(m.series.filled for m in prep.panel))
    model_path = artifacts.export(forecaster, meta, cfg.out)
    artifacts.write_last_window(prep.panel[0].series, cfg.window, cfg.out)
    metrics = evaluated["metrics"]
    result = {"metrics": metrics, "beats_baselines": beats,
              "best": min(metrics, key=lambda name: metrics[name]["mase"]),
              "verdict": panel_verdict(metrics, len(prep.panel)),
              "overall": "mean over series of each metric; best and verdict on mean MASE",
              "per_series": evaluated["per_series"],
              "intervals": evaluated["intervals"], "interval_scaling":
                  "half-width = intervals[level][lead] x the window's mean absolute change",
              "coverage": evaluated["coverage"],
              "settings": {k: getattr(cfg, k) for k in ("freq", "window", "horizon", "season",
                                                          "period")},
              "best_epoch": best["epoch"], "epochs_run": len(ckpt["history"]),
              "stopped_early": stopped_early, "threads": torch.get_num_threads(),
              "filled_missing": meta["filled_missing"], "bf16": cfg.bf16}
    metrics_path = os.path.join(cfg.out, artifacts.METRICS_FILE)
    write_metrics(result, metrics_path)
    log(f"\nwrote {metrics_path}, {pngs[0]}, {pngs[1]},\n"
        f"      {model_path} (TorchScript) and {os.path.join(cfg.out, artifacts.META_FILE)}")
    return result


def interval_widths(meta: dict, history: np.ndarray, steps: int) -> Optional[dict]:
    """Half-widths for leads 1..steps after ``history`` (see
    ``evaluation.widths_for``), times the last window's mean absolute change
    for a per-window-scaled model."""
    from .evaluation import widths_for
    if not meta.get("intervals"):
        return None
    widths = widths_for(meta["intervals"], steps)
    if meta.get("per_window"):
        s = float(window_scale(history[None, -meta["window"]:])[0, 0])
        widths = {level: w * s for level, w in widths.items()}
    return widths


def forecast_command(forecaster, meta: dict, source: str, csv: str, steps: int) -> str:
    """The forecast of every series of a long-format file, as long-format CSV
    text: unique_id, ds, y and the intervals' bounds."""
    from .forecaster import forecast
    window, freq = meta["window"], meta.get("freq")
    header = ["unique_id", "ds", "y"]
    if meta.get("intervals"):
        header += [f"{b}{level}" for level in LEVELS for b in ("lo", "hi")]
    lines = [",".join(header)]
    for s in load_panel(csv):
        own = freq
        if s.times is not None:
            own = freq or frequency.infer_freq(s.times, s.source, str(s.time_column))
            s = frequency.regularise(s, own)
        if len(s) < window:
            raise DataError(f"{s.source}: {len(s)} values, fewer than the model's window of "
                            f"{window}")
        values = forecast(forecaster, s.values, window, steps, source)
        widths = interval_widths(meta, s.values, steps)
        times = frequency.future_times(s.times, own, steps)
        for k, v in enumerate(values):
            row = [s.uid, frequency.time_label(times[k], own) if times else str(k + 1),
                   f"{v:.9g}"]
            for level in (widths or {}):
                row += [f"{v - widths[level][k]:.9g}", f"{v + widths[level][k]:.9g}"]
            lines.append(",".join(str(c) for c in row))
    return "\n".join(lines) + "\n"


def is_panel_checkpoint(ckpt: dict) -> bool:
    return bool(ckpt["scaler"].get("per_window"))

