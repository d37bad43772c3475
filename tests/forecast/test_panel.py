"""Several series, one global model (issue 10): a long-format file (unique_id,
ds, y) trains one per-window-scaled Forecaster across its series, reports
every series' metrics and the overall ones, and forecasts every series; its
series are checked one by one, and a bad one is named in one line."""
import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from lstm_ext.forecast import artifacts, cli, panel, series
from lstm_ext.forecast.forecaster import Forecaster
from lstm_ext.nn import LSTMModel

DATA = os.path.join(os.path.dirname(series.__file__), "data", "us_macro_quarterly_long.csv")
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


def test_embedded_long_file_trains_one_model_and_forecasts_every_series(tmp_path, lstm):
    out = tmp_path / "run"
    status, text, err = lstm("train", "--csv", DATA, *FAST, "--out", out)
    assert status == 0, err
    ids = ["realgdp", "realcons", "realinv", "realgovt", "realdpi"]
    assert "5 series" in text and "quarterly" in text and "overall, mean over 5 series" in text
    result = json.loads((out / "metrics.json").read_text())
    assert list(result["per_series"]) == ids
    for r in result["per_series"].values():
        assert set(r["metrics"]) == {"lstm", "persistence", "seasonal_naive_4"}
        assert r["windows"] == 23 and set(r["coverage"]) == {"80", "95"}
    mean = np.mean([r["metrics"]["lstm"]["mase"] for r in result["per_series"].values()])
    assert result["metrics"]["lstm"]["mase"] == pytest.approx(mean)
    assert result["verdict"].startswith(f"best on mean test MASE over 5 series: {result['best']}")
    meta = json.loads((out / "model.json").read_text())
    assert meta["per_window"] is True and meta["long_format"]["series"] == ids
    # the exported model: raw values in, raw forecast out, one module
    model, meta = artifacts.load_exported(str(out / "model.pt"))
    x = torch.tensor(pd.read_csv(DATA).query("unique_id == 'realgdp'")["y"].to_numpy()[-16:],
                     dtype=torch.float32).reshape(1, 16, 1)
    with torch.no_grad():
        assert model(x).shape == (1, 8) and abs(float(model(x)[0, 0]) - float(x[0, -1])) < 500
    status, text, err = lstm("forecast", "--model", out / "model.pt", "--csv", DATA,
                             "--steps", "10")
    assert status == 0, err
    rows = text.strip().splitlines()
    assert rows[0] == "unique_id,ds,y,lo80,hi80,lo95,hi95" and len(rows) == 1 + 5 * 10
    assert rows[1].startswith("realgdp,2009-10-01,") and rows[11].startswith("realcons,")
    lo, hi = float(rows[1].split(",")[3]), float(rows[1].split(",")[4])
    assert lo < float(rows[1].split(",")[2]) < hi
    status, again, _ = lstm("forecast", "--checkpoint", out / "checkpoint.pt", "--csv", DATA,
                            "--steps", "10")
    assert status == 0
    np.testing.assert_allclose([float(r.split(",")[2]) for r in again.strip().splitlines()[1:]],
                               [float(r.split(",")[2]) for r in rows[1:]], rtol=1e-6)
    # rolling-origin backtest of the same run: every series, then means over series
    status, text, err = lstm("backtest", "--checkpoint", out / "checkpoint.pt", "--origins", 4,
                             "--baselines", "naive")
    assert status == 0, err
    assert "backtest: 4 origins over the test part of each of 5 series" in text
    bt = json.loads((out / "backtest.json").read_text())
    assert list(bt["per_series"]) == ids
    for r in bt["per_series"].values():
        assert len(r["origins"]) == 4 and len(r["origin_times"]) == 4
        assert len(r["per_lead"]["lstm"]["mase"]) == 8
    assert set(bt["overall"]) == {"lstm", "persistence", "seasonal_naive_4"}
    for method in bt["overall"]:
        per = [r["overall"][method]["mase"] for r in bt["per_series"].values()]
        assert bt["overall"][method]["mase"] == pytest.approx(np.mean(per))
        lead = [r["per_lead"][method]["mase"][2] for r in bt["per_series"].values()]
        assert bt["per_lead"][method]["mase"][2] == pytest.approx(np.mean(lead))
    best = min(bt["overall"], key=lambda k: bt["overall"][k]["mase"])
    assert f"best on mean test MASE over 5 series: {best}" in text
    # the origins of one series are its test windows' (their last time before the lead)
    gdp = pd.read_csv(DATA).query("unique_id == 'realgdp'")["ds"].tolist()
    assert all(t[:10] in gdp for t in bt["per_series"]["realgdp"]["origin_times"])
    assert (out / "backtest.png").stat().st_size > 0


def test_per_window_forecaster_scripts_exports_streams_and_scales():
    torch.manual_seed(0)
    model = LSTMModel(1, 4, 3)
    model.eval()
    f = Forecaster(model, 1.3, 0.7, 8, 3, linear=torch.randn(9, 3) * 0.1, per_window=True).eval()
    x = torch.randn(4, 8, 1).cumsum(1)
    with torch.no_grad():
        eager = f(x)
        torch.testing.assert_close(torch.jit.script(f)(x), eager)
        torch.testing.assert_close(f(1000 * x + 50), 1000 * eager + 50, rtol=1e-4, atol=1e-2)
        torch.testing.assert_close(f(torch.full((1, 8, 1), 3.0)), torch.full((1, 3), 3.0))
        exported = torch.export.export(f, (x,))
        torch.testing.assert_close(exported.module()(x), eager)
        values = torch.randn(12, 2, 1).cumsum(0)
        for steps in (2, 5, 12):
            state = None
            for t in range(steps):
                pred, state = f.step(values[t], state)
            torch.testing.assert_close(pred, f(values[:steps].transpose(0, 1)), atol=1e-5,
                                       rtol=1e-5)


def long_file(path, ids=("a", "b"), n=60, freq="QS", start="2000-01-01", shuffle=None):
    rows = ["unique_id,ds,y"]
    for k, uid in enumerate(ids):
        times = pd.date_range(start, periods=n, freq=freq)
        for i, t in enumerate(times):
            rows.append(f"{uid},{t.date()},{10 + k + 0.1 * i + np.sin(i):.4f}")
    if shuffle:
        rows[shuffle], rows[shuffle + 1] = rows[shuffle + 1], rows[shuffle]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("make,parts", [
    (lambda p: long_file(p, shuffle=65), ["series 'b'", "not in time order",
                                          "sort the file by 'unique_id' and 'ds'"]),
    (lambda p: p.write_text("unique_id,ds,y\na,2000-01-01,1\na,2000-01-01,2\n"),
     ["series 'a', line 3", "appears twice", "remove or aggregate"]),
    (lambda p: p.write_text(long_file(p).read_text() + "".join(
        f"c,{t.date()},{i}\n" for i, t in enumerate(pd.date_range("2000-01-01", periods=200,
                                                                   freq="MS")))),
     ["series 'c'", "frequency MS", "one frequency across series"]),
    (lambda p: p.write_text(long_file(p).read_text() + "c,2000-01-01,1\nc,2000-04-01,2\n"
                            "c,2000-07-01,3\nc,2000-10-01,4\n"),
     ["series 'c'", "too few for --window 16"]),
    (lambda p: p.write_text("unique_id,ds,y\na,2000-01-01,1\na,2000-04-01,x\n"),
     ["series 'a'", "line 3", "'x' is not a number"]),
])
def test_bad_series_are_named_in_one_line(tmp_path, lstm, make, parts):
    path = tmp_path / "long.csv"
    make(path)
    out = tmp_path / "run"
    status, _, err = lstm("train", "--csv", path, *FAST, "--out", out)
    assert status == 2 and len(err) == 1, err
    for part in parts:
        assert part in err[0], err[0]
    assert not out.exists()


def test_per_window_intervals_scale_with_the_last_window():
    meta = {"window": 4, "intervals": {"80": [1.0, 2.0], "95": [2.0, 3.0]}, "per_window": True}
    widths = panel.interval_widths(meta, np.array([0.0, 9.0, 1.0, 3.0, 5.0]), 2)
    np.testing.assert_allclose(widths["80"], [4.0, 8.0])   # mean |change| of 9,1,3,5 is 4


def test_model_json_per_window_must_be_true_or_false(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"window": 4, "horizon": 2, "per_window": "yes"}))
    with pytest.raises(ValueError, match="'per_window': expected true or false"):
        artifacts.load_meta(str(path))


def test_backtest_refuses_a_file_that_no_longer_holds_what_the_run_was_trained_on(tmp_path,
                                                                                   lstm):
    path = tmp_path / "long.csv"
    long_file(path)
    status, _, err = lstm("train", "--csv", path, "--epochs", "1", "--hidden-size", "4",
                          "--baselines", "naive", "--out", tmp_path / "run")
    assert status == 0, err
    times = pd.date_range("2000-01-01", periods=60, freq="QS")
    path.write_text("ds,y\n" + "".join(f"{t.date()},{i % 7}\n" for i, t in enumerate(times)))
    status, _, err = lstm("backtest", "--checkpoint", tmp_path / "run" / "checkpoint.pt",
                          "--baselines", "naive")
    assert status == 2 and len(err) == 1, err
    assert "trained on several series" in err[0] and "now holds one" in err[0], err[0]
    # and the other way: a run of that one series, then the file of several
    status, _, err = lstm("train", "--csv", path, "--epochs", "1", "--hidden-size", "4",
                          "--baselines", "naive", "--out", tmp_path / "one")
    assert status == 0, err
    long_file(path)
    status, _, err = lstm("backtest", "--checkpoint", tmp_path / "one" / "checkpoint.pt",
                          "--baselines", "naive")
    assert status == 2 and len(err) == 1, err
    assert "trained on one series" in err[0] and "now holds several" in err[0], err[0]
