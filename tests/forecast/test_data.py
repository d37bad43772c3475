"""The CSV loader on good and bad files, and the split and scaling (no leakage)."""
import numpy as np
import pytest

from lstm_ext.forecast import series, windows


def write(tmp_path, text, name="series.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def test_default_data_loads_and_fills_gaps():
    s = series.load_series()
    assert len(s) == 2284 and s.filled == 59 and s.column == "co2"
    assert np.isfinite(s.values).all()
    assert s.times.is_monotonic_increasing


def test_gaps_are_interpolated_in_time(tmp_path):
    csv = write(tmp_path, "date,v\n2020-01-01,1\n2020-01-02,\n2020-01-04,4\n,\n")
    with pytest.raises(series.DataError, match="line 5"):
        series.load_series(csv, "v", "date")
    csv = write(tmp_path, "date,v\n2020-01-01,1\n2020-01-02,\n2020-01-04,4\n2020-01-05,\n")
    s = series.load_series(csv, "v", "date")
    np.testing.assert_allclose(s.values, [1, 2, 4, 4])
    assert s.filled == 2


def test_unsorted_rows_are_refused_with_how_to_sort(tmp_path):
    csv = write(tmp_path, "t,v\n2020-01-01,1\n2020-01-03,3\n2020-01-02,2\n")
    with pytest.raises(series.DataError, match=r"column 't', line 4: time 2020-01-02 00:00:00 "
                       r"comes before .*not in time order; sort the file by 't'"):
        series.load_series(csv, "v", "t")


def test_without_time_column_single_numeric_column(tmp_path):
    csv = write(tmp_path, "v\n1\n\n3\n")
    s = series.load_series(csv)
    np.testing.assert_allclose(s.values, [1, 3])  # pandas drops the blank line


@pytest.mark.parametrize("text,kwargs,message", [
    ("date,v\n2020-01-01,1\n2020-01-02,abc\n", dict(column="v", time_column="date"),
     r"series.csv: column 'v', line 3: 'abc' is not a number"),
    ("date,v\n2020-01-01,1\n", dict(column="x"), r"no column 'x' \(--column\); the file has \['date', 'v'\]"),
    ("date,v\n2020-01-01,1\n", dict(column="v", time_column="when"), r"no column 'when' \(--time-column\)"),
    ("date,v\nyesterday,1\n", dict(column="v", time_column="date"), r"column 'date', row 2 .*'yesterday' is not a date"),
    ("date,v\n2020-01-01,\n2020-01-02,\n", dict(column="v"), r"column 'v' has no values \(all 2 missing\)"),
    ("", dict(column="v"), "the file is empty"),
    ("date,v\n", dict(column="v"), "has a header but no rows"),
    ("a,b,c\n1,2,3\n", dict(), r"3 value columns .*name it with --column .*long format.*melt"),
    ("date,v\n2020-01-01,1\n2020-01-01,2\n", dict(column="v", time_column="date"), "appears twice .*remove or aggregate"),
    ("v\n1\ninf\n", dict(column="v"), "line 3: infinite value$"),
    # pandas reads an integer of 309+ digits as a Python int, then raised
    # OverflowError (a traceback from the command line)
    ("v\n1\n2\n" + "9" * 400 + "\n", dict(column="v"),
     r"line 4: infinite value \(99999999999999999999\.\.\. \(400 characters\), too large"),
    # a date column with one odd cell: still the time column (requiring every
    # row to look like a date dropped it, and the series lost its times)
    ("t,v\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n2020-01-04,4\n2020-01-05,5\n"
     "2020-01-06,6\n2020-01-07,7\n2020-01-08,8\n2020-01-09,9\nunknown,10\n", dict(column="v"),
     r"column 't', row 11 \(line 11\): 'unknown' is not a date"),
    # a time cell pandas reads as missing (n/a, NA, empty) was shown as 'nan'
    ("t,v\n2020-01-01,1\n2020-01-02,2\n2020-01-03,3\n2020-01-04,4\n2020-01-05,5\n"
     "2020-01-06,6\n2020-01-07,7\n2020-01-08,8\n2020-01-09,9\nn/a,10\n", dict(column="v"),
     r"column 't', row 11 \(line 11\): no time: the cell is empty or a missing-value mark"),
    # pandas' "Mixed timezones detected" named neither file nor column
    ("t,v\n2020-01-01T00:00:00+01:00,1\n2020-01-02T00:00:00+02:00,2\n", dict(column="v"),
     r"series.csv: column 't': times with different UTC offsets"),
    # a cell of a million characters: refused at once (dateutil took 18 s,
    # growing with the square), shown by its start and length
    ("t,v\n2020-01-01,1\n" + "2020-01-02" + "x" * 1000000 + ",2\n", dict(column="v"),
     r"line 3\): '2020-01-02xxxxxxxxxx\.\.\. \(1000010 characters\)' is not a date or time$"),
])
def test_bad_files(tmp_path, text, kwargs, message):
    with pytest.raises(series.DataError, match=message):
        series.load_series(write(tmp_path, text), **kwargs)


def test_wrong_encoding(tmp_path):
    csv = write(tmp_path, "date,v\n2020-01-01,1\n".encode("utf-16"))
    with pytest.raises(series.DataError, match="not UTF-8 text"):
        series.load_series(csv, "v")


def test_missing_file():
    with pytest.raises(series.DataError, match="no such file"):
        series.load_series("/nonexistent/file.csv", "v")


def test_a_directory_or_a_device_is_not_called_missing(tmp_path):
    with pytest.raises(series.DataError, match="a directory, not a CSV file"):
        series.load_series(str(tmp_path), "v")
    with pytest.raises(series.DataError, match="not a regular file"):
        series.load_series("/dev/null", "v")


def test_a_ragged_row_is_one_line(tmp_path):
    """pandas' message ends in a newline; ours is one line."""
    with pytest.raises(series.DataError, match="Expected 2 fields in line 3, saw 3") as e:
        series.load_series(write(tmp_path, "a,b\n1,2\n3,4,5\n"), "b")
    assert "\n" not in str(e.value)


def test_too_short_for_the_window(tmp_path):
    csv = write(tmp_path, "v\n" + "\n".join(str(i) for i in range(30)) + "\n")
    s = series.load_series(csv, "v")
    with pytest.raises(series.DataError, match=r"series.csv: column 'v' has 30 values, too few for --window 104"):
        windows.check_long_enough(s, windows.split_series(len(s)), 104, 13)


def test_split_is_chronological_without_leakage():
    n, window, horizon = 1000, 20, 5
    split = windows.split_series(n)
    assert 0 < split.train_end < split.val_end < split.n == n
    train = windows.window_origins(split, window, horizon, "train")
    val = windows.window_origins(split, window, horizon, "val")
    test = windows.window_origins(split, window, horizon, "test")
    assert train.max() + horizon < split.train_end          # training targets stay in train
    assert val.min() + 1 >= split.train_end and val.max() + horizon < split.val_end
    assert test.min() + 1 >= split.val_end and test.max() + horizon < n
    values = np.arange(n, dtype=float) ** 1.5
    x, y = windows.make_windows(values, test, window, horizon)
    np.testing.assert_allclose(x[:, -1], values[test])
    np.testing.assert_allclose(y[:, 0], values[test + 1])


def test_scaler_uses_the_training_part_only():
    values = np.concatenate([np.sin(np.arange(700) / 5), 1000 * np.random.default_rng(0).normal(size=300)])
    split = windows.split_series(len(values))
    a = windows.Scaler.fit(values[:split.train_end], 3)
    b = windows.Scaler.fit(values[:split.train_end].copy(), 3)
    assert a.scale == b.scale and a.scale < 1  # the wild later part never entered
