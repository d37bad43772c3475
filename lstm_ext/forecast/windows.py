"""The windows a model learns from: a series split in time (train, validation,
test), its scaling, the windows of each part, and the checks that the series
suits them. ``prepare`` makes all of it for a run's settings."""
import os
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from . import frequency
from .series import DataError, Series, file_is_long_format, load_series
from .settings import DEFAULT_OUT, FLOAT32_TINY, RUNS, TrainConfig, check_config

# The model sees changes divided by their typical size in the training part and
# its loss squares them: beyond this ratio float32 overflows (or the series is
# flat in training and wild later, which no model learns from).
SCALED_LIMIT = 1e12


@dataclass
class Split:
    """Chronological parts, as index ranges into the series: [0, train_end),
    [train_end, val_end), [val_end, n)."""
    train_end: int
    val_end: int
    n: int


def split_series(n: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> Split:
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return Split(n - n_test - n_val, n - n_test, n)


class Scaler:
    """Standardises first differences: the model sees (x_t - x_{t-1}) / scale
    and predicts (x_{t+k} - x_t) / target_scale, so a series that trends out of
    its training range (as CO2 does) looks like its training part. Both scales
    are fitted on the training part only."""

    def __init__(self, scale: float, target_scale: float, per_window: bool = False) -> None:
        self.scale = float(scale)
        self.target_scale = float(target_scale)
        # per_window: the scales apply to windows already scaled by their own
        # mean absolute change (a global model of several series: panel)
        self.per_window = per_window

    @classmethod
    def fit(cls, train: np.ndarray, horizon: int) -> "Scaler":
        diffs = np.diff(train)
        ahead = np.concatenate([train[k:] - train[:-k] for k in range(1, horizon + 1)])
        scale = float(np.std(diffs)) or 1.0
        target = float(np.sqrt(np.mean(ahead ** 2))) or 1.0
        return cls(scale, target)

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {"scale": self.scale, "target_scale": self.target_scale}
        if self.per_window:
            out["per_window"] = True
        return out


def window_origins(split: Split, window: int, horizon: int, part: str) -> np.ndarray:
    """Indices t of the last observed value of each window whose targets
    t+1..t+horizon all lie in `part`; inputs are the `window` values up to t
    (they may reach back into earlier parts: the past is known)."""
    lo, hi = {"train": (0, split.train_end), "val": (split.train_end, split.val_end),
              "test": (split.val_end, split.n)}[part]
    first = max(window - 1, lo - 1)
    last = hi - 1 - horizon
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, last + 1, dtype=np.int64)


def make_windows(values: np.ndarray, origins: np.ndarray, window: int, horizon: int):
    """(inputs (N, window), targets (N, horizon)) in original units."""
    idx = origins[:, None] + np.arange(-window + 1, 1)[None, :]
    tgt = origins[:, None] + np.arange(1, horizon + 1)[None, :]
    return values[idx], values[tgt]


def check_long_enough(series: Series, split: Split, window: int, horizon: int) -> None:
    counts: List[str] = []
    for part in ("train", "val", "test"):
        n = len(window_origins(split, window, horizon, part))
        if n == 0:
            counts.append(part)
    if counts:
        need = int(np.ceil((window + horizon) / 0.7)) + 2 * horizon
        raise DataError(
            f"{series.source}: column '{series.column}' has {len(series)} values, too few for "
            f"--window {window} and --horizon {horizon}: the {', '.join(counts)} part(s) get no "
            f"complete window (need roughly {need} values, or a shorter --window)")


def check_scaled(series: Series, scaler: Scaler) -> None:
    """What the model computes in float32 must be normal, finite float32 numbers:
    the series' changes, and the changes divided by their typical size."""
    where = f"{series.source}: column '{series.column}'"
    peak = float(np.abs(np.diff(series.values)).max()) if len(series) > 1 else 0.0
    typical = min(scaler.scale, scaler.target_scale)
    small = min(peak, typical)
    if peak > 0 and small < FLOAT32_TINY:  # (Scaler.fit gives 1 when float64 underflows)
        raise DataError(
            f"{where}: its changes are of the order of {small:.3g}, too small for the model, "
            f"which computes in float32 (smallest normal number {FLOAT32_TINY:.3g}); "
            f"rescale the series")
    ratio = float(series.values.max() - series.values.min()) / typical
    if ratio > SCALED_LIMIT:
        raise DataError(
            f"{where}: its values span {ratio:.3g} times the typical change in its training "
            f"part; the model computes in float32 and handles at most {SCALED_LIMIT:g} "
            f"(rescale the series, or drop a nearly flat stretch)")


def check_season(series: Series, split: Split, season: int, given: bool = True) -> None:
    """The seasonal-naive baseline looks one season back from the test part."""
    if season > split.val_end and not given:
        raise DataError(
            f"{series.source}: column '{series.column}': its {len(series)} values are too few "
            f"for the season of {season} steps inferred from its frequency ({split.val_end} "
            f"values before the test part); give a shorter one with --season, or --season 1 "
            "for none")
    if season > split.val_end:
        raise DataError(
            f"{series.source}: column '{series.column}': --season {season} is longer than the "
            f"{split.val_end} values before the test part, from which the seasonal-naive "
            f"baseline looks one season back (use --season <= {split.val_end})")


RIDGE = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)  # relative to the features' variance
# What the linear part may use besides the window's changes (chosen on
# validation): nothing (a pure autoregression on changes), an intercept (a
# drift), or also the last value (mean reversion, for series without a trend).
FEATURE_SETS = ("changes", "changes+drift", "changes+level+drift")


def linear_features(x: np.ndarray) -> np.ndarray:
    """The linear part's features of windows ``x (N, window)``: the window's
    changes, the last value and 1 (the rows of ``Forecaster.linear``)."""
    return np.concatenate([np.diff(x, axis=1), x[:, -1:], np.ones((len(x), 1))], axis=1)


def _ridge(f: np.ndarray, t: np.ndarray, ridge: float, use: str) -> np.ndarray:
    """Ridge weights (window + 1, horizon) on standardised features; the
    intercept (if used) is not penalised; unused features get weight 0."""
    n_changes = f.shape[1] - 2
    cols = list(range(n_changes))
    if use == "changes+level+drift":
        cols.append(n_changes)
    intercept = use != "changes"
    a = f[:, cols]
    mean = a.mean(axis=0) if intercept else np.zeros(len(cols))
    std = a.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = (a - mean) / std
    t_mean = t.mean(axis=0) if intercept else np.zeros(t.shape[1])
    gram = z.T @ z
    unit = float(np.trace(gram)) / max(len(gram), 1) or 1.0
    w = np.linalg.solve(gram + ridge * unit * np.eye(len(gram)), z.T @ (t - t_mean)) / std[:, None]
    weights = np.zeros((f.shape[1], t.shape[1]))
    weights[cols] = w
    if intercept:
        weights[-1] = t_mean - mean @ w
    return weights


def fit_seasonal(values: np.ndarray, fit_end: int, period: float) -> np.ndarray:
    """The series' seasonal shape with ``K = min(4, period // 2)`` harmonics of
    ``period``: least squares of the changes of ``values[:fit_end]`` on the
    changes of sin/cos terms (and a constant). Packed as the Forecaster's
    ``seasonal`` vector: [omega, psi, sin coefficients (K), cos coefficients
    (K)], psi the phase of the first harmonic at step 0."""
    k = max(1, min(4, int(period // 2)))
    n = fit_end
    omega = 2 * np.pi / period
    t = np.arange(n)[:, None] * np.arange(1, k + 1)[None, :] * omega
    design = np.diff(np.concatenate([np.sin(t), np.cos(t)], axis=1), axis=0)
    design = np.concatenate([np.ones((n - 1, 1)), design], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.diff(values[:fit_end]), rcond=None)
    sin_c, cos_c = coef[1:1 + k], coef[1 + k:]
    psi = np.arctan2(sin_c[0], cos_c[0])
    return np.concatenate([[omega, psi], sin_c, cos_c])


def _shape(seasonal: np.ndarray, theta: np.ndarray) -> np.ndarray:
    k = (len(seasonal) - 2) // 2
    h = theta[..., None] * np.arange(1, k + 1)
    return np.sin(h) @ seasonal[2:2 + k] + np.cos(h) @ seasonal[2 + k:]


def phase_projection(window: int, omega: float) -> np.ndarray:
    """(4, window): the least-squares coefficients of [1, t / window, cos(omega
    t), sin(omega t)], t = -window + 1 .. 0, from a window's values."""
    t = np.arange(-window + 1, 1, dtype=float)
    design = np.stack([np.ones(window), t / window, np.cos(omega * t), np.sin(omega * t)], 1)
    return np.linalg.pinv(design)


def deseasonalise(x: np.ndarray, seasonal: np.ndarray, horizon: int):
    """For windows ``x (N, window)``: the values less the seasonal shape,
    phase-locked to each window (the first harmonic's phase estimated from
    the window itself, so no time stamp is needed), and the shape's change
    from the last value to each lead ``(N, horizon)``. As ``Forecaster.base``."""
    window = x.shape[1]
    omega, psi = seasonal[0], seasonal[1]
    c = x @ phase_projection(window, omega).T
    theta = psi - np.arctan2(c[:, 3], c[:, 2])
    t = np.arange(-window + 1, 1, dtype=float)
    z = x - _shape(seasonal, theta[:, None] + omega * t[None, :])
    leads = np.arange(1, horizon + 1, dtype=float)
    ahead = _shape(seasonal, theta[:, None] + omega * leads[None, :]) - \
        _shape(seasonal, theta)[:, None]
    return z, ahead


def linear_base(x: np.ndarray, weights: np.ndarray, seasonal: Optional[np.ndarray],
                horizon: int) -> np.ndarray:
    """The linear part's forecast (N, horizon) from windows ``x``, in numpy:
    what ``Forecaster.base`` computes."""
    if seasonal is None:
        return x[:, -1:] + linear_features(x) @ weights
    z, ahead = deseasonalise(x, seasonal, horizon)
    return x[:, -1:] + ahead + linear_features(z) @ weights


def fit_linear(values: np.ndarray, split: Split, window: int, horizon: int,
               period: float = 1.0) -> Dict[str, object]:
    """The hybrid forecaster's linear part: ridge regression of the next
    ``horizon`` changes from the last value (``y - x_t``) on the window's
    ``window - 1`` changes (and, per ``FEATURE_SETS``, an intercept and the
    last value), in closed form; for seasonal series (``period`` >= 2 and a
    window of at least one period) also the same on the deseasonalised window
    with the seasonal shape's change added (``deseasonalise``). The variant,
    feature set and ridge penalty are those whose fit on the training windows
    (seasonal shape fitted on the training part) has the lowest MAE on the
    validation windows; with them everything is then fitted again on the
    training and validation parts (as the statistical baselines are fitted on
    all data before the test part). The test part is never used. Returns the
    weights ``(window + 1, horizon)``, the seasonal vector (or None), the
    choice and its validation MAE."""
    def design(seasonal, *parts):
        origins = np.concatenate([window_origins(split, window, horizon, p) for p in parts])
        x, y = make_windows(values, origins, window, horizon)
        if seasonal is None:
            return linear_features(x), y - x[:, -1:], x
        z, ahead = deseasonalise(x, seasonal, horizon)
        return linear_features(z), y - x[:, -1:] - ahead, x

    variants = [None]
    if period >= 2 and window >= period:
        variants.append("seasonal")
    best = None
    for variant in variants:
        seasonal = fit_seasonal(values, split.train_end, period) if variant else None
        f_train, t_train, _ = design(seasonal, "train")
        f_val, t_val, _ = design(seasonal, "val")
        for use in FEATURE_SETS:
            for ridge in RIDGE:
                pred = f_val @ _ridge(f_train, t_train, ridge, use)
                mae = float(np.mean(np.abs(pred - t_val)))
                if best is None or mae < best["val_mae"]:
                    best = {"ridge": ridge, "features": use, "val_mae": mae,
                            "variant": variant}
    seasonal = fit_seasonal(values, split.val_end, period) if best["variant"] else None
    f_all, t_all, _ = design(seasonal, "train", "val")
    best["weights"] = _ridge(f_all, t_all, best["ridge"], best["features"])
    best["seasonal"] = seasonal
    return best


@dataclass
class Prepared:
    """A run's series, split and scaling, and per part (train, val, test) its
    windows' origins and the model's tensors (inputs, targets), scaled. ``cfg``
    is the run's settings with those inferred from the data filled in;
    ``linear`` the hybrid's linear weights (window - 1, horizon); ``notes``
    what was inferred, for the log."""
    series: Series
    split: Split
    scaler: Scaler
    tensors: Dict[str, List[torch.Tensor]] = field(default_factory=dict)
    origins: Dict[str, np.ndarray] = field(default_factory=dict)
    cfg: Optional[TrainConfig] = None
    linear: Optional[np.ndarray] = None
    notes: List[str] = field(default_factory=list)
    seasonal: Optional[np.ndarray] = None
    panel: Optional[list] = None   # several series (long format): panel.Member each


def out_folder(series: Series, csv: Optional[str]) -> str:
    """The default output folder: runs/co2 for the embedded series, else
    runs/FILE-COLUMN (the file's name without extension, and its column)."""
    if csv is None:
        return DEFAULT_OUT
    stem = os.path.splitext(os.path.basename(csv))[0]
    name = f"{stem}-{series.column}" if series.column != stem else stem
    return os.path.join(RUNS, re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run")


def resolve(cfg: TrainConfig, series: Series) -> Tuple[TrainConfig, Series, List[str]]:
    """``cfg`` with the settings left to the data (None) filled in from the
    series' frequency (inferred from its times, or ``--freq``); the series on
    that frequency's calendar; and notes saying what was inferred."""
    notes = []
    freq = cfg.freq
    if series.times is not None:
        if freq is None:
            freq = frequency.infer_freq(series.times, series.source, series.time_column)
            how = "inferred from column '" + str(series.time_column) + "'"
        else:
            how = "given (--freq)"
        series = frequency.regularise(series, freq)
        series.freq = freq
        found = frequency.defaults_for(freq)
        notes.append(f"frequency: {found.kind}, {how}")
    elif freq is not None:
        raise DataError(f"{series.source}: --freq {freq} needs a time column (--time-column)")
    else:
        found = frequency.NO_TIME
        notes.append(f"frequency: {found.kind} assumed (the file has no time column; "
                     "give one with --time-column, or a season with --season)")
    window = cfg.window if cfg.window is not None else found.window
    horizon = cfg.horizon if cfg.horizon is not None else found.horizon
    season = cfg.season if cfg.season is not None else found.season
    if cfg.period is not None:
        period = cfg.period
    elif cfg.season is not None:
        period = float(cfg.season)
    else:
        period = found.period
    given = [n for n in ("window", "horizon", "season") if getattr(cfg, n) is not None]
    notes.append("settings: window {} , horizon {}, season {}{} ({})".format(
        window, horizon, season if season > 1 else "none",
        f", Fourier period {period:.6g}" if period > 1 else "",
        "given: " + ", ".join(given) if given else "inferred; flags override"
    ).replace(" ,", ","))
    resolved = replace(cfg, freq=freq, window=window, horizon=horizon, season=season,
                       period=float(period), out=cfg.out or out_folder(series, cfg.csv))
    return resolved, series, notes


def prepare(cfg: TrainConfig) -> Prepared:
    """Loads and checks the series of ``cfg``, fills in the settings its
    frequency implies, splits it, fits the scaling and the linear part on its
    training part and makes the windows of every part. A long-format file
    (unique_id, ds, y) is several series for one global model: ``panel``."""
    if file_is_long_format(cfg.csv, cfg.column):
        from .panel import prepare_panel
        return prepare_panel(cfg)
    series = load_series(cfg.csv, cfg.column, cfg.time_column)
    given = cfg
    cfg, series, notes = resolve(cfg, series)
    check_config(asdict(cfg))
    split = split_series(len(series))
    check_long_enough(series, split, cfg.window, cfg.horizon)
    check_season(series, split, cfg.season, given.season is not None)
    scaler = Scaler.fit(series.values[:split.train_end], cfg.horizon)
    check_scaled(series, scaler)
    linear = fit_linear(series.values, split, cfg.window, cfg.horizon, cfg.period)
    # the LSTM predicts the linear part's residual: scaled by its typical size
    origins = window_origins(split, cfg.window, cfg.horizon, "train")
    x, y = make_windows(series.values, origins, cfg.window, cfg.horizon)
    residual = y - linear_base(x, linear["weights"], linear["seasonal"], cfg.horizon)
    scaler.target_scale = float(np.sqrt(np.mean(residual ** 2))) or 1.0
    check_scaled(series, scaler)
    notes.append(f"model: ridge regression on the window's "
                 + ("deseasonalised " if linear["seasonal"] is not None else "")
                 + f"{linear['features']} (penalty "
                 f"{linear['ridge']:g} chosen on validation, then fitted on training + "
                 "validation) + LSTM on its residual (trained on the training part, "
                 "epochs chosen on validation)")
    prep = Prepared(series, split, scaler, cfg=cfg, linear=linear["weights"], notes=notes,
                    seasonal=linear["seasonal"])
    for part in ("train", "val", "test"):
        origins = window_origins(split, cfg.window, cfg.horizon, part)
        x, y = make_windows(series.values, origins, cfg.window, cfg.horizon)
        inputs = np.diff(x, axis=1)[:, :, None] / scaler.scale
        base = linear_base(x, linear["weights"], linear["seasonal"], cfg.horizon)
        targets = (y - base) / scaler.target_scale
        prep.tensors[part] = [torch.tensor(inputs, dtype=torch.float32),
                              torch.tensor(targets, dtype=torch.float32)]
        prep.origins[part] = origins
    return prep
