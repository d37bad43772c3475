"""Loading a univariate time series from CSV (the windows a model learns from
it are made in ``windows``).

Files users give us can be wrong in every way; every problem becomes a
``DataError`` naming the file, the column and (where there is one) the row.
The embedded default series (Mauna Loa weekly CO2) ships in ``data/`` next to
this file, as package data.
"""
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

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
    time_column: Optional[str] = None   # the column the times came from
    freq: Optional[str] = None          # pandas frequency, set by frequency.resolve
    uid: Optional[str] = None           # its unique_id, for a series of a long-format file

    def __len__(self) -> int:
        return len(self.values)


def _to_numbers(raw: pd.Series) -> pd.Series:
    """``pd.to_numeric(raw, errors="coerce")``: what is not a number becomes
    NaN (reported by the callers). An integer of 309 or more digits, which
    pandas parses as a Python int and then raises OverflowError on (a
    traceback from the command line), becomes +-inf, refused as too large."""
    try:
        return pd.to_numeric(raw, errors="coerce")
    except OverflowError:
        def one(v):
            try:
                return float(v)
            except (TypeError, ValueError):
                return np.nan
            except OverflowError:
                return np.inf if v > 0 else -np.inf
        return pd.Series([one(v) for v in raw], index=raw.index, dtype=float)


def _one_line(exc: Exception) -> str:
    """An exception's message on one line (pandas' may end in a newline)."""
    return " ".join(str(exc).split())


def _shown(value) -> str:
    """A cell's text for a message: a hostile file's cell of a million
    characters (or a number of hundreds of digits) by its start and length."""
    text = str(value).strip()
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _read_csv(csv: str, **options) -> pd.DataFrame:
    """A user's CSV file as a frame with at least one row; every way the file
    can be unreadable is a one-line DataError naming it."""
    source = os.path.basename(csv)
    if os.path.isdir(csv):
        raise DataError(f"{csv}: a directory, not a CSV file")
    if not os.path.isfile(csv):
        raise DataError(f"{csv}: no such file" if not os.path.exists(csv)
                        else f"{csv}: not a regular file (a CSV file is needed)")
    try:
        frame = pd.read_csv(csv, encoding="utf-8", skipinitialspace=True, **options)
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        "save the file as UTF-8 CSV") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{source}: the file is empty") from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"{source}: not a readable CSV file: {_one_line(exc)}") from exc
    if frame.empty:
        raise DataError(f"{source}: the file has a header but no rows")
    return frame


def _parse_times(raw: pd.Series, source: str, column: str) -> pd.DatetimeIndex:
    def refuse(rows):
        row = int(rows[0])
        cell = raw.iloc[row]
        # pandas reads '', NA, n/a, NULL, ... as NaN: saying 'nan' named no cell of the file
        what = ("no time: the cell is empty or a missing-value mark (such as NA, n/a, NULL)"
                if pd.isna(cell) else f"'{_shown(cell)}' is not a date or time")
        raise DataError(f"{source}: column '{column}', row {row + 2} (line {row + 2}): {what}")

    text = raw.astype(str).str.strip().str.replace(r"\.0$", "", regex=True)
    # No date or time takes 64 characters; a cell of a million took dateutil
    # 18 s to refuse, and its time grows with the square of the length.
    long = (text.str.len() > 64).to_numpy().nonzero()[0]
    if len(long):
        refuse(long)
    if text.str.fullmatch(r"\d{8}").all():          # YYYYMMDD, as the default data
        parsed = pd.to_datetime(text, format="%Y%m%d", errors="coerce")
    elif text.str.fullmatch(r"\d{4}").all():        # years
        parsed = pd.to_datetime(text, format="%Y", errors="coerce")
    else:
        try:
            parsed = pd.to_datetime(text, errors="coerce", format="mixed")
        except ValueError as exc:  # "Mixed timezones detected", without file or column
            raise DataError(f"{source}: column '{column}': times with different UTC offsets "
                            "(daylight saving time?); write them in one offset or in UTC "
                            f"(pandas: {_one_line(exc)})") from None
    bad = parsed.isna().to_numpy().nonzero()[0]
    if len(bad):
        refuse(bad)
    return pd.DatetimeIndex(parsed)


TIME_NAMES = ("date", "time", "ds", "timestamp", "datetime", "month", "week", "year",
              "period", "quarter", "day")


def _guess_time_column(frame: pd.DataFrame, column: Optional[str]) -> Optional[str]:
    """The file's time column when none is named: one named like a time
    (date, ds, year, ...) or one whose text reads as dates, in nine rows of
    ten at least: a column of dates with one odd cell is still the time
    column (its odd cell is then refused by line), where requiring every row
    made it a column of no use, and the series silently lost its times."""
    for name in frame.columns:
        if str(name).strip().lower() in TIME_NAMES and name != column:
            return name
    for name in frame.columns:
        if name == column or pd.api.types.is_numeric_dtype(frame[name]):
            continue
        text = frame[name].dropna().astype(str).str.strip()
        if len(text) and text.str.match(r"^\d{1,4}[-/.]\d{1,2}").mean() >= 0.9:
            return name
    return None


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
    take the nearest observed value. Rows must be in time order (unsorted
    or repeated times are refused with what to do).
    """
    column, time_column = columns_of(csv, column, time_column)
    csv_given = csv is not None
    csv = DEFAULT_CSV if csv is None else csv
    source = os.path.basename(csv)
    frame = _read_csv(csv)
    if is_long_format(frame.columns) and column is None:
        raise DataError(f"{source}: a long-format file of several series (unique_id, ds, "
                        "y): read it with load_panel")
    if time_column is None and csv_given:
        time_column = _guess_time_column(frame, column)
    if column is None:
        numeric = [c for c in frame.columns if c != time_column]
        if len(numeric) != 1:
            raise DataError(
                f"{source}: the file has {len(numeric)} value columns "
                f"{list(map(str, numeric))}; this command forecasts one series: name it with "
                "--column (several series go in long format, columns unique_id, ds, y: in "
                "pandas, frame.melt(id_vars=[TIME], var_name='unique_id', value_name='y'))")
        column = numeric[0]
    for name, what in ((column, "--column"), (time_column, "--time-column")):
        if name is not None and name not in frame.columns:
            raise DataError(f"{source}: no column '{name}' ({what}); "
                            f"the file has {list(map(str, frame.columns))}")

    raw = frame[column]
    values = _to_numbers(raw)
    bad = (values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")).to_numpy().nonzero()[0]
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{source}: column '{column}', line {row + 2}: '{_shown(raw.iloc[row])}' is "
                        f"not a number ({len(bad)} such value{'s' if len(bad) > 1 else ''})")
    if not np.isfinite(values.dropna().to_numpy(dtype=float)).all():
        row = int((~np.isfinite(values.fillna(0).to_numpy(dtype=float))).nonzero()[0][0])
        shown = "" if str(raw.iloc[row]).strip().lower().lstrip("+-") in ("inf", "infinity") \
            else f" ({_shown(raw.iloc[row])}, too large for a float)"
        raise DataError(f"{source}: column '{column}', line {row + 2}: infinite value{shown}")
    too_big = (values.abs() > VALUE_LIMIT).to_numpy().nonzero()[0]
    if len(too_big):
        row = int(too_big[0])
        raise DataError(f"{source}: column '{column}', line {row + 2}: {_shown(raw.iloc[row])} is too "
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
                            f"time {times[row]} appears twice (one value per time: remove "
                            "or aggregate the duplicates)")
        if not times.is_monotonic_increasing:
            row = int(np.nonzero(np.diff(times.values) < np.timedelta64(0))[0][0]) + 1
            raise DataError(f"{source}: column '{time_column}', line {row + 2}: time "
                            f"{times[row]} comes before {times[row - 1]} on the line above: "
                            "the rows are not in time order; sort the file by "
                            f"'{time_column}' (in pandas: frame.sort_values('{time_column}'))")
        values.index = times

    filled = int(values.isna().sum())
    if filled:
        method = "time" if times is not None else "linear"
        values = values.interpolate(method=method, limit_direction="both")
    return Series(values.to_numpy(dtype=np.float64), times, source, column, filled,
                  time_column if times is not None else None)


LONG_COLUMNS = ("unique_id", "ds", "y")


def is_long_format(columns) -> bool:
    """Whether a file's columns are those of long format: unique_id, ds, y."""
    return set(LONG_COLUMNS) <= {str(c).strip().lower() for c in columns}


def file_is_long_format(csv: Optional[str], column: Optional[str] = None) -> bool:
    """Whether ``csv`` (None: the embedded series) is a long-format file of
    series read as such (no ``--column`` naming one column of it)."""
    if csv is None or column is not None or not os.path.isfile(csv):
        return False
    try:
        header = pd.read_csv(csv, nrows=0, encoding="utf-8", skipinitialspace=True)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return False  # load_series says what is wrong
    return is_long_format(header.columns)


def load_panel(csv: str) -> List[Series]:
    """The series of a long-format CSV file (columns unique_id, ds, y; any
    others are ignored), one ``Series`` per unique_id in order of first
    appearance, named in ``source`` ("FILE series 'ID'") so that every later
    message names it. Each series' rows must be in time order with one row
    per time (rows of different series may be interleaved); missing values
    are filled as for one series. DataError names the series and line."""
    source = os.path.basename(csv)
    frame = _read_csv(csv, dtype={0: str})
    names = {str(c).strip().lower(): c for c in frame.columns}
    uid, ds, y = (names[c] for c in LONG_COLUMNS)
    ids = frame[uid]
    if ids.isna().any():
        row = int(np.nonzero(ids.isna().to_numpy())[0][0])
        raise DataError(f"{source}: column '{uid}', line {row + 2}: no series id")
    ids = ids.astype(str).str.strip()
    raw = frame[y]
    values = _to_numbers(raw)
    text = raw.astype(str).str.strip()
    bad = (values.isna() & raw.notna() & (text != "")).to_numpy().nonzero()[0]
    if len(bad):
        row = int(bad[0])
        raise DataError(f"{source}: series '{ids.iloc[row]}', column '{y}', line {row + 2}: "
                        f"'{_shown(raw.iloc[row])}' is not a number")
    arr = values.to_numpy(dtype=float)
    odd = np.nonzero(~np.isnan(arr) & (~np.isfinite(arr) | (np.abs(arr) > VALUE_LIMIT)))[0]
    if len(odd):
        row = int(odd[0])
        raise DataError(f"{source}: series '{ids.iloc[row]}', column '{y}', line {row + 2}: "
                        f"{_shown(raw.iloc[row])} is infinite or too large; the model computes in "
                        f"float32, so values must lie within +-{VALUE_LIMIT:g}")
    times = _parse_times(frame[ds], source, ds)
    out: List[Series] = []
    for name in pd.unique(ids):
        rows = np.nonzero((ids == name).to_numpy())[0]
        where = f"{source}: series '{name}'"
        t = times[rows]
        step = np.diff(t.values)
        if (step == np.timedelta64(0)).any():
            k = int(np.nonzero(step == np.timedelta64(0))[0][0]) + 1
            raise DataError(f"{where}, line {rows[k] + 2}: time {t[k]} appears twice (one "
                            "value per series and time: remove or aggregate the duplicates)")
        if (step < np.timedelta64(0)).any():
            k = int(np.nonzero(step < np.timedelta64(0))[0][0]) + 1
            raise DataError(f"{where}, line {rows[k] + 2}: time {t[k]} comes before "
                            f"{t[k - 1]} (line {rows[k - 1] + 2}): the series' rows are not "
                            f"in time order; sort the file by '{uid}' and '{ds}' (in "
                            f"pandas: frame.sort_values(['{uid}', '{ds}']))")
        v = pd.Series(arr[rows], index=t)
        if v.isna().all():
            raise DataError(f"{where}: column '{y}' has no values (all {len(v)} missing)")
        filled = int(v.isna().sum())
        if filled:
            v = v.interpolate(method="time", limit_direction="both")
        out.append(Series(v.to_numpy(dtype=np.float64), pd.DatetimeIndex(t),
                          f"{source} series '{name}'", str(y), filled, str(ds), uid=str(name)))
    return out


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


def forecast_csv(series: Series, values: np.ndarray, freq: Optional[str] = None,
                 intervals: Optional[dict] = None) -> str:
    """CSV text of ``values`` forecast after the end of ``series``: each with
    its time (by calendar arithmetic on ``freq``, the series' frequency) where
    the series has times, else with its step number; with ``intervals``
    ({"80": (lower, upper), ...}) also the bounds of each interval."""
    from .frequency import future_times, time_label
    times = future_times(series.times, freq, len(values)) if series.times is not None else None
    header = ["time" if times else "step", series.column]
    for level in (intervals or {}):
        header += [f"lo{level}", f"hi{level}"]
    lines = [",".join(header)]
    for k, v in enumerate(values):
        label = time_label(times[k], freq) if times else str(k + 1)
        row = [label, f"{v:.9g}"]
        for lower, upper in (intervals or {}).values():
            row += [f"{lower[k]:.9g}", f"{upper[k]:.9g}"]
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"
