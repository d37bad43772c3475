"""The sampling frequency of a series, inferred from its time column, and the
settings that follow from it (seasonal period, Fourier period, window,
horizon); future times by calendar arithmetic.

Frequencies are pandas offset aliases ("W-SAT", "MS", "QS-OCT", "YS-JAN",
"D", "h", "30min", ...). A series without a time column has no calendar: its
steps are taken as evenly spaced with no season (``--season`` gives one).
"""
import warnings
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import pandas as pd

from .series import DataError, Series


@dataclass(frozen=True)
class Defaults:
    """What a frequency implies: the seasonal-naive lag ``season`` (1: none),
    the seasonal ``period`` in steps, possibly fractional (365.25/7 weeks: for
    Fourier terms; 1.0: none), and the window and horizon."""
    kind: str
    season: int
    period: float
    window: int
    horizon: int


NO_TIME = Defaults("no time column: evenly spaced steps, no season", 1, 1.0, 52, 13)


def _days(offset) -> Optional[float]:
    """The nominal length of one step in days (None when it has none)."""
    try:
        return pd.Timedelta(offset).total_seconds() / 86400.0
    except (ValueError, TypeError):
        return None


def defaults_for(freq: str) -> Defaults:
    """The seasonal period, window and horizon a frequency suggests (what the
    M4 competition and common practice use: a year of steps for the season
    of weekly and coarser data, a day and a week for finer data)."""
    offset = parse_freq(freq)
    name = getattr(offset, "rule_code", None) or offset.name
    name = name.split("-")[0].upper()
    n = offset.n
    if name in ("Y", "YS", "YE", "A", "AS", "BA", "BAS", "BY", "BYS", "BYE"):
        return Defaults(f"yearly ({freq})" if n == 1 else f"every {n} years ({freq})",
                        1, 1.0, 20, 6)
    if name in ("Q", "QS", "QE", "BQ", "BQS", "BQE"):
        if n == 1:
            return Defaults(f"quarterly ({freq})", 4, 4.0, 16, 8)
        return Defaults(f"every {n} quarters ({freq})", 1, 1.0, 16, 8)
    if name in ("M", "MS", "ME", "BM", "BMS", "BME", "SM", "SMS", "SME", "CBMS", "CBME"):
        if n == 1 and not name.startswith("S"):
            return Defaults(f"monthly ({freq})", 12, 12.0, 36, 12)
        per_year = 24 if name.startswith("S") else 12 / n
        if per_year == int(per_year) and per_year > 1:
            return Defaults(f"{freq}", int(per_year), float(per_year), 3 * int(per_year),
                            int(per_year))
        return Defaults(f"{freq}", 1, 1.0, 20, 6)
    if name == "W":
        if n == 1:
            return Defaults(f"weekly ({freq})", 52, 365.25 / 7, 104, 13)
        return Defaults(f"every {n} weeks ({freq})", round(52 / n), 365.25 / 7 / n,
                        2 * round(52 / n), max(1, round(13 / n)))
    if name in ("B", "C"):
        return Defaults(f"business days ({freq})", 5, 5.0, 60, 10)
    days = _days(offset)
    if days is None:
        return Defaults(f"{freq}", 1, 1.0, 52, 13)
    if days >= 1:
        if days == 1:
            return Defaults(f"daily ({freq})", 7, 7.0, 56, 14)
        return Defaults(f"every {days:g} days ({freq})", 1, 1.0, 52, 13)
    per_day = 1.0 / days
    if abs(per_day - round(per_day)) > 1e-9:
        return Defaults(f"{freq}", 1, 1.0, 52, 13)
    per_day = int(round(per_day))
    kind = {24: "hourly", 48: "half-hourly", 96: "quarter-hourly"}.get(per_day, f"{per_day} a day")
    window = min(7 * per_day, 2016)
    return Defaults(f"{kind} ({freq})", per_day, float(per_day), window, per_day)


def infer_freq(times: pd.DatetimeIndex, source: str, column: str) -> str:
    """The frequency of sorted, distinct ``times``; DataError naming the first
    irregular step (and ``--freq``) if there is none."""
    if len(times) < 3:
        raise DataError(f"{source}: column '{column}' has {len(times)} times, too few to "
                        "infer a frequency from; give it with --freq (e.g. --freq MS)")
    with warnings.catch_warnings():  # pandas 3 warns that it will return an offset
        warnings.simplefilter("ignore")
        freq = pd.infer_freq(times)
    if freq is not None:
        return freq if isinstance(freq, str) else freq.freqstr
    gaps = np.diff(times.values)
    common = pd.Series(gaps).mode().iloc[0]
    odd = int(np.nonzero(gaps != common)[0][0])
    raise DataError(
        f"{source}: column '{column}': irregular time steps ({times[odd].date()} to "
        f"{times[odd + 1].date()} is {pd.Timedelta(gaps[odd])}, most steps are "
        f"{pd.Timedelta(common)}); give the frequency with --freq (e.g. --freq D), which "
        "fills missing times by interpolation, or fix the data")


def parse_freq(freq: str, given: str = "--freq") -> pd.DateOffset:
    """``freq`` as a pandas offset of a positive step; DataError otherwise,
    naming where it was ``given`` (the option, or a file's setting). Checked
    before any calendar is made: a step of 0 (--freq 0D) made pandas divide by
    zero (a traceback from the command line). pandas' own message is left out:
    it repeats itself three times in one line."""
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        raise DataError(f"{given} {freq}: not a pandas frequency "
                        "(such as W-SAT, MS, QS, YS, D, h)") from None
    if offset.n <= 0:
        raise DataError(f"{given} {freq}: expected a positive step, but got {offset.n}")
    return offset


def regularise(series: Series, freq: str) -> Series:
    """``series`` on the full calendar of ``freq`` from its first to its last
    time: missing times are added and filled by interpolation in time
    (counted in ``filled``); DataError if a time is off that calendar."""
    offset = parse_freq(freq)
    limit = 50 * len(series.times) + 1000
    if isinstance(offset, pd.offsets.Tick):  # a fixed duration: count the steps first
        steps = (series.times[-1] - series.times[0]).value // offset.nanos + 1
        if steps > limit:
            raise DataError(f"{series.source}: --freq {freq} would make {steps} steps out of "
                            f"{len(series.times)} values; give the frequency the data has")
    try:
        grid = pd.date_range(series.times[0], series.times[-1], freq=offset)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"--freq {freq}: no calendar from {series.times[0]} to "
                        f"{series.times[-1]} ({exc})") from None
    if len(grid) == 0 or grid[0] != series.times[0]:
        raise DataError(f"{series.source}: column '{series.column}': the first time "
                        f"{series.times[0]} is not on the calendar of --freq {freq}")
    off = ~series.times.isin(grid)
    if off.any():
        t = series.times[int(np.nonzero(off)[0][0])]
        raise DataError(f"{series.source}: column '{series.column}': time {t} is not on the "
                        f"calendar of --freq {freq} (starting {series.times[0]}); "
                        "give the frequency the data has")
    if len(grid) > limit:
        raise DataError(f"{series.source}: --freq {freq} would make {len(grid)} steps out of "
                        f"{len(series.times)} values; give the frequency the data has")
    if len(grid) == len(series.times):
        return series
    values = pd.Series(series.values, index=series.times).reindex(grid)
    added = int(values.isna().sum())
    values = values.interpolate(method="time", limit_direction="both")
    return Series(values.to_numpy(dtype=np.float64), pd.DatetimeIndex(grid), series.source,
                  series.column, series.filled + added, uid=series.uid)


def future_times(times: pd.DatetimeIndex, freq: Optional[str], steps: int
                 ) -> Optional[List[pd.Timestamp]]:
    """The ``steps`` times after the last of ``times``, by calendar arithmetic
    on ``freq`` (a monthly series goes on the 1st of each month)."""
    if times is None or freq is None:
        return None
    try:
        grid = pd.date_range(times[-1], periods=steps + 1, freq=parse_freq(freq))
    except (OverflowError, ValueError) as exc:  # past year 2262, pandas' last time
        raise DataError(f"{steps} steps of {freq} after {times[-1]} go past the times pandas "
                        f"can represent ({exc})") from None
    return list(grid[1:])


def time_label(t: pd.Timestamp, freq: Optional[str]) -> str:
    """A time as the forecast CSV shows it: a date, with the time of day for
    frequencies finer than a day."""
    if freq is not None:
        days = _days(pd.tseries.frequencies.to_offset(freq))
        if days is not None and days < 1:
            return str(t)
    return str(t.date())
