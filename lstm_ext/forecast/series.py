"""Loading a univariate time series from CSV (the windows a model learns from
it are made in ``windows``).

Files users give us can be wrong in every way; every problem becomes a
``DataError`` naming the file, the column and (where there is one) the row.
The embedded default series (Mauna Loa weekly CO2) ships in ``data/`` next to
this file, as package data.
"""
import os
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import pandas as pd

DEFAULT_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                           "mauna_loa_co2_weekly.csv")
DEFAULT_COLUMN = "co2"
DEFAULT_TIME_COLUMN = "date"

# The model computes in float32 (largest value 3.4e38). Changes double a
# series' range and forecasts extrapolate, so values must stay well inside it.
VALUE_LIMIT = 1e36


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


def columns_of(csv: Optional[str], column: Optional[str], time_column: Optional[str]
               ) -> Tuple[Optional[str], Optional[str]]:
    """The (column, time column) read from ``csv``: those given, for the
    embedded series (``csv`` None) its own where none is given. A column of
    None is the file's one numeric column, found when it is read."""
    if csv is None:
        return column or DEFAULT_COLUMN, time_column or DEFAULT_TIME_COLUMN
    return column, time_column


def load_series(csv: Optional[str] = None, column: Optional[str] = None,
                time_column: Optional[str] = None) -> Series:
    """Reads one numeric column (and optionally a time column) of a CSV file
    (by default the embedded series).

    Missing values (empty fields) are filled by interpolation in time when a
    time column is given (linearly by position otherwise); gaps at either end
    take the nearest observed value. Rows are ordered by time.
    """
    column, time_column = columns_of(csv, column, time_column)
    csv = DEFAULT_CSV if csv is None else csv
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


def load_to_continue(meta: dict, csv: Optional[str] = None, column: Optional[str] = None,
                     time_column: Optional[str] = None) -> Series:
    """The series a model forecasts from: the embedded one, or ``csv`` read with
    the columns given, else with those ``meta`` names (a model's model.json);
    DataError if it is shorter than the model's window (``meta["window"]``)."""
    if csv is None:
        series = load_series()
    else:
        series = load_series(csv, column or meta.get("column"),
                             time_column if time_column is not None
                             else (meta.get("time_column") if column is None else None))
    window = meta["window"]
    if len(series) < window:
        raise DataError(f"{series.source}: {len(series)} values, fewer than the model's "
                        f"window of {window}")
    return series


def forecast_csv(series: Series, values: np.ndarray) -> str:
    """CSV text of ``values`` forecast after the end of ``series``: each with
    its time (a median time step apart) where the series has times, else with
    its step number."""
    times = None
    if series.times is not None and len(series.times) > 1:
        step = np.median(np.diff(series.times.values))
        times = [series.times[-1] + step * (k + 1) for k in range(len(values))]
    lines = ["time," + series.column if times else "step," + series.column]
    for k, v in enumerate(values):
        label = str(times[k].date()) if times else str(k + 1)
        lines.append(f"{label},{v:.9g}")
    return "\n".join(lines) + "\n"
