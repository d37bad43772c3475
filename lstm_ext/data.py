"""Loading a univariate time series from CSV, and the windows a model learns from.

Files users give us can be wrong in every way; every problem becomes a
``DataError`` naming the file, the column and (where there is one) the row.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import pandas as pd

from .settings import FLOAT32_TINY

DEFAULT_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                           "mauna_loa_co2_weekly.csv")
DEFAULT_COLUMN = "co2"
DEFAULT_TIME_COLUMN = "date"
DEFAULT_SEASON = 52  # weeks: the default series' seasonal period

# The model computes in float32 (largest value 3.4e38). Changes double a
# series' range and forecasts extrapolate, so values must stay well inside it.
VALUE_LIMIT = 1e36
# The model sees changes divided by their typical size in the training part and
# its loss squares them: beyond this ratio float32 overflows (or the series is
# flat in training and wild later, which no model learns from).
SCALED_LIMIT = 1e12


class DataError(ValueError):
    """A data file that cannot be used as it is; the message says where and why."""


@dataclass
class Series:
    values: np.ndarray            # float64, gaps filled
    times: Optional[pd.DatetimeIndex]
    source: str                   # file name, for messages and metadata
    column: str
    filled: int                   # how many missing values were filled

    def __len__(self) -> int:
        return len(self.values)


def _parse_times(raw: pd.Series, source: str, column: str) -> pd.DatetimeIndex:
    text = raw.astype(str).str.strip()
    if text.str.fullmatch(r"\d{8}").all():          # YYYYMMDD, as the default data
        parsed = pd.to_datetime(text, format="%Y%m%d", errors="coerce")
    else:
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy().nonzero()[0]
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{source}: column '{column}', row {row + 2} (line {row + 2}): "
                        f"'{raw.iloc[row]}' is not a date or time")
    return pd.DatetimeIndex(parsed)


def load_series(csv: Optional[str] = None, column: Optional[str] = None,
                time_column: Optional[str] = None) -> Series:
    """Reads one numeric column (and optionally a time column) of a CSV file.

    Missing values (empty fields) are filled by interpolation in time when a
    time column is given (linearly by position otherwise); gaps at either end
    take the nearest observed value. Rows are ordered by time.
    """
    if csv is None:
        csv = DEFAULT_CSV
        column = column or DEFAULT_COLUMN
        time_column = time_column or DEFAULT_TIME_COLUMN
    source = os.path.basename(csv)
    if not os.path.isfile(csv):
        raise DataError(f"{csv}: no such file")
    try:
        frame = pd.read_csv(csv, encoding="utf-8", skipinitialspace=True)
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        "save the file as UTF-8 CSV") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{source}: the file is empty") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{source}: not a readable CSV file: {exc}") from exc
    if frame.empty:
        raise DataError(f"{source}: the file has a header but no rows")
    if column is None:
        numeric = [c for c in frame.columns if c != time_column]
        if len(numeric) != 1:
            raise DataError(f"{source}: say which column to use with --column; "
                            f"the file has {list(map(str, frame.columns))}")
        column = numeric[0]
    for name, what in ((column, "--column"), (time_column, "--time-column")):
        if name is not None and name not in frame.columns:
            raise DataError(f"{source}: no column '{name}' ({what}); "
                            f"the file has {list(map(str, frame.columns))}")

    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = (values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy().nonzero()[0]
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{source}: column '{column}', line {row + 2}: '{raw.iloc[row]}' is "
                        f"not a number ({len(bad)} such value{'s' if len(bad) > 1 else ''})")
    if not np.isfinite(values.dropna().to_numpy(dtype=float)).all():
        row = int((~np.isfinite(values.fillna(0).to_numpy(dtype=float))).nonzero()[0][0])
        raise DataError(f"{source}: column '{column}', line {row + 2}: infinite value")
    too_big = (values.abs() > VALUE_LIMIT).to_numpy().nonzero()[0]
    if len(too_big):
        row = int(too_big[0])
        raise DataError(f"{source}: column '{column}', line {row + 2}: {raw.iloc[row]} is too "
                        f"large; the model computes in float32, so values must lie within "
                        f"+-{VALUE_LIMIT:g}")
    if values.isna().all():
        raise DataError(f"{source}: column '{column}' has no values (all {len(values)} missing)")

    times = None
    if time_column is not None:
        times = _parse_times(frame[time_column], source, time_column)
        if times.has_duplicates:
            row = int(np.asarray(times.duplicated()).nonzero()[0][0])
            raise DataError(f"{source}: column '{time_column}', line {row + 2}: "
                            f"time {times[row]} appears twice")
        order = np.argsort(times.to_numpy(), kind="stable")
        times = times[order]
        values = values.iloc[order].reset_index(drop=True)
        values.index = times

    filled = int(values.isna().sum())
    if filled:
        method = "time" if times is not None else "linear"
        values = values.interpolate(method=method, limit_direction="both")
    return Series(values.to_numpy(dtype=np.float64), times, source, column, filled)


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
