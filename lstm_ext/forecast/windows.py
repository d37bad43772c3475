"""The windows a model learns from: a series split in time (train, validation,
test), its scaling, the windows of each part, and the checks that the series
suits them. ``prepare`` makes all of it for a run's settings."""
from dataclasses import asdict, dataclass, field
from typing import Dict, List

import numpy as np
import torch

from .series import DataError, Series, load_series
from .settings import FLOAT32_TINY, TrainConfig, check_config

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

    def __init__(self, scale: float, target_scale: float) -> None:
        self.scale = float(scale)
        self.target_scale = float(target_scale)

    @classmethod
    def fit(cls, train: np.ndarray, horizon: int) -> "Scaler":
        diffs = np.diff(train)
        ahead = np.concatenate([train[k:] - train[:-k] for k in range(1, horizon + 1)])
        scale = float(np.std(diffs)) or 1.0
        target = float(np.sqrt(np.mean(ahead ** 2))) or 1.0
        return cls(scale, target)

    def to_dict(self) -> Dict[str, float]:
        return {"scale": self.scale, "target_scale": self.target_scale}


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


def check_season(series: Series, split: Split, season: int) -> None:
    """The seasonal-naive baseline looks one season back from the test part."""
    if season > split.val_end:
        raise DataError(
            f"{series.source}: column '{series.column}': --season {season} is longer than the "
            f"{split.val_end} values before the test part, from which the seasonal-naive "
            f"baseline looks one season back (use --season <= {split.val_end})")


@dataclass
class Prepared:
    """A run's series, split and scaling, and per part (train, val, test) its
    windows' origins and the model's tensors (inputs, targets), scaled."""
    series: Series
    split: Split
    scaler: Scaler
    tensors: Dict[str, List[torch.Tensor]] = field(default_factory=dict)
    origins: Dict[str, np.ndarray] = field(default_factory=dict)


def prepare(cfg: TrainConfig) -> Prepared:
    """Loads and checks the series of ``cfg``, splits it, fits the scaling on
    its training part and makes the windows of every part."""
    check_config(asdict(cfg))
    series = load_series(cfg.csv, cfg.column, cfg.time_column)
    split = split_series(len(series))
    check_long_enough(series, split, cfg.window, cfg.horizon)
    check_season(series, split, cfg.season)
    scaler = Scaler.fit(series.values[:split.train_end], cfg.horizon)
    check_scaled(series, scaler)
    prep = Prepared(series, split, scaler)
    for part in ("train", "val", "test"):
        origins = window_origins(split, cfg.window, cfg.horizon, part)
        x, y = make_windows(series.values, origins, cfg.window, cfg.horizon)
        inputs = np.diff(x, axis=1)[:, :, None] / scaler.scale
        targets = (y - x[:, -1:]) / scaler.target_scale
        prep.tensors[part] = [torch.tensor(inputs, dtype=torch.float32),
                              torch.tensor(targets, dtype=torch.float32)]
        prep.origins[part] = origins
    return prep
