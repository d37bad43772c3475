"""Frequency-aware training (issue 10): the frequency inferred from the time
column sets season, window and horizon (flags override); forecasts follow the
calendar; output folders are named after the data and never overwritten
silently; bad time columns get one line naming the flag that fixes them."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from lstm_ext.forecast import cli, frequency, series

FAST = ["--epochs", "2", "--hidden-size", "4", "--baselines", "naive"]


@pytest.fixture
def lstm(capsys):
    def run(*args):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                status = cli.main([str(a) for a in args])
            except SystemExit as exc:
                status = exc.code
        out, err = capsys.readouterr()
        return status, out, err.splitlines()
    return run


def write(path, times, values, header="when,value"):
    lines = [header] + [f"{t},{v:.6f}" for t, v in zip(times, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def monthly(n=240):
    t = np.arange(n)
    return 10 + 0.02 * t + 2 * np.sin(2 * np.pi * t / 12) + 0.1 * np.cos(1.7 * t)


@pytest.mark.parametrize("freq,season,window,horizon", [
    ("W-SAT", 52, 104, 13), ("MS", 12, 36, 12), ("ME", 12, 36, 12), ("QS-OCT", 4, 16, 8),
    ("YS-JAN", 1, 20, 6), ("D", 7, 56, 14), ("h", 24, 168, 24), ("30min", 48, 336, 48),
    ("B", 5, 60, 10),
])
def test_defaults_follow_the_frequency(freq, season, window, horizon):
    d = frequency.defaults_for(freq)
    assert (d.season, d.window, d.horizon) == (season, window, horizon)
    if freq == "W-SAT":
        assert d.period == pytest.approx(365.25 / 7)


def test_future_times_follow_the_calendar():
    months = pd.DatetimeIndex(pd.date_range("2016-01-01", periods=5, freq="MS"))
    labels = [frequency.time_label(t, "MS") for t in frequency.future_times(months, "MS", 3)]
    assert labels == ["2016-06-01", "2016-07-01", "2016-08-01"]
    years = pd.DatetimeIndex(pd.date_range("2006-01-01", periods=3, freq="YS"))
    assert [frequency.time_label(t, "YS-JAN") for t in
            frequency.future_times(years, "YS-JAN", 2)] == ["2009-01-01", "2010-01-01"]


def test_monthly_series_infers_its_settings_and_forecasts_by_calendar(tmp_path, lstm,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv = write(tmp_path / "sales.csv", pd.date_range("2000-01-01", periods=240, freq="MS")
                .strftime("%Y-%m-%d"), monthly())
    status, out, err = lstm("train", "--csv", csv, *FAST)     # no column or frequency flags
    assert status == 0, err
    assert "frequency: monthly (MS), inferred from column 'when'" in out
    assert "window 36, horizon 12, season 12" in out and "seasonal_naive_12" in out
    assert "seasonal_naive_52" not in out
    run = tmp_path / "runs" / "sales-value"                   # named after file and column
    meta = json.loads((run / "model.json").read_text())
    assert (meta["freq"], meta["window"], meta["horizon"], meta["season"]) == ("MS", 36, 12, 12)
    assert meta["time_column"] == "when" and meta["last_time"] == "2019-12-01"
    status, out, err = lstm("forecast", "--model", run / "model.pt", "--csv", csv, "--steps", "14")
    assert status == 0, err
    rows = out.splitlines()
    assert rows[0] == "time,value,lo80,hi80,lo95,hi95"
    assert [r.split(",")[0] for r in rows[1:4]] == ["2020-01-01", "2020-02-01", "2020-03-01"]
    lo80, hi80, lo95, hi95 = (np.array([float(r.split(",")[k]) for r in rows[1:]])
                              for k in (2, 3, 4, 5))
    value = np.array([float(r.split(",")[1]) for r in rows[1:]])
    assert (lo95 <= lo80).all() and (lo80 <= value).all() and (value <= hi80).all()
    assert (hi80 <= hi95).all()

    # an existing run is never overwritten silently
    status, out, _ = lstm("train", "--csv", csv, *FAST)
    assert status == 0 and "writing to runs/sales-value-2" in out
    assert (tmp_path / "runs" / "sales-value-2" / "model.pt").exists()
    before = (run / "model.pt").read_bytes()
    status, _, err = lstm("train", "--csv", csv, *FAST, "--out", run)
    assert status == 2 and len(err) == 1 and "--force" in err[0] and "holds an earlier run" in err[0]
    assert (run / "model.pt").read_bytes() == before
    status, _, err = lstm("train", "--csv", csv, *FAST, "--out", run, "--force", "--seed", "1")
    assert status == 0, err


def test_flags_override_the_inferred_settings(tmp_path, lstm):
    csv = write(tmp_path / "s.csv", pd.date_range("2000-01-01", periods=240, freq="MS")
                .strftime("%Y-%m-%d"), monthly())
    status, out, err = lstm("train", "--csv", csv, *FAST, "--window", "24", "--horizon", "6",
                            "--season", "6", "--out", tmp_path / "run")
    assert status == 0, err
    assert "window 24, horizon 6, season 6" in out and "given: window, horizon, season" in out


def test_yearly_integer_column_is_a_time_column(tmp_path):
    csv = write(tmp_path / "y.csv", range(1900, 1960), np.arange(60.0), header="year,count")
    s = series.load_series(str(csv))
    assert s.time_column == "year" and s.times[0] == pd.Timestamp("1900-01-01")
    assert frequency.infer_freq(s.times, "y.csv", "year").startswith("YS")


@pytest.mark.parametrize("times,extra,parts", [
    (list(pd.date_range("2000-01-01", periods=100, freq="D").delete([10, 50, 51])), [],
     ["irregular time steps", "--freq"]),
    (list(pd.date_range("2000-01-01", periods=60, freq="MS")), [],
     ["too few for --window 36", "--window"]),
    (list(pd.date_range("2000-01-01", periods=100, freq="D")) * 1, ["--freq", "MS"],
     ["not on the calendar of --freq MS"]),
    # a step of 0 made pandas divide by zero; 1ns a calendar of 10^16 times
    (list(pd.date_range("2000-01-01", periods=100, freq="D")), ["--freq=0D"],
     ["--freq 0D: expected a positive step, but got 0"]),
    (list(pd.date_range("2000-01-01", periods=100, freq="D")), ["--freq=-2h"],
     ["--freq -2h: expected a positive step, but got -2"]),
    (list(pd.date_range("2000-01-01", periods=100, freq="D")), ["--freq=1ns"],
     ["--freq 1ns would make 8553600000000001 steps out of 100 values"]),
])
def test_bad_time_columns_are_one_line(tmp_path, lstm, times, extra, parts):
    csv = write(tmp_path / "bad.csv", [t.strftime("%Y-%m-%d") for t in times],
                np.arange(len(times), dtype=float))
    out = tmp_path / "run"
    status, _, err = lstm("train", "--csv", csv, *FAST, *extra, "--out", out)
    assert status == 2 and len(err) == 1, err
    for part in parts:
        assert part in err[0], err[0]
    assert not out.exists()                                   # nothing written


def test_freq_fills_missing_times(tmp_path, lstm):
    times = pd.date_range("2000-01-01", periods=200, freq="D").delete([10, 50, 51])
    csv = write(tmp_path / "gaps.csv", times.strftime("%Y-%m-%d"), np.sin(np.arange(197) / 3))
    status, out, err = lstm("train", "--csv", csv, *FAST, "--freq", "D", "--out", tmp_path / "r")
    assert status == 0, err
    assert "200 values, 3 missing filled" in out and "daily (D), given (--freq)" in out


def test_no_time_column_says_what_was_assumed(tmp_path, lstm):
    path = tmp_path / "plain.csv"
    path.write_text("v\n" + "\n".join(f"{x:.5f}" for x in monthly(300)) + "\n")
    status, out, err = lstm("train", "--csv", path, *FAST, "--out", tmp_path / "r")
    assert status == 0, err
    assert "no time column: evenly spaced steps, no season assumed" in out


@pytest.mark.parametrize("text,parts", [
    ("t,a,b\n2020-01-01,1,2\n", ["2 value columns", "--column", "long format", "melt"]),
    ("t,a,b,c\n2020-01-01,1,2,3\n", ["3 value columns", "--column", "unique_id, ds, y"]),
])
def test_several_series_are_refused_with_what_to_do(tmp_path, lstm, text, parts):
    path = tmp_path / "many.csv"
    path.write_text(text)
    status, _, err = lstm("train", "--csv", path, *FAST, "--out", tmp_path / "r")
    assert status == 2 and len(err) == 1
    for part in parts:
        assert part in err[0], err[0]
