"""The statistical baselines (ETS, auto-ARIMA) never look past an origin and
agree with statsmodels' own forecasts; the hybrid Forecaster scripts, exports
with torch.export, streams like it forecasts, and its intervals are
calibrated; the command reports every baseline and names the best honestly."""
import json
import warnings

import numpy as np
import pytest
import torch

import lstm_ext
from lstm_ext.forecast import baselines, cli, evaluation, windows
from lstm_ext.forecast.forecaster import Forecaster


def seasonal_series(n=200, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 20 + 0.05 * t + 3 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, n).cumsum() * 0.3


@pytest.mark.parametrize("method", ["ets", "arima", "theta"])
def test_statistical_baselines_never_peek(method):
    values = seasonal_series()
    fit_end, horizon = 150, 6
    origins = np.arange(149, 190)

    def forecasts(v):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "ets":
                return baselines.ets(v, fit_end, origins, horizon, 12)
            if method == "theta":
                return baselines.theta(v, fit_end, origins, horizon, 12)
            return baselines.auto_arima(v, fit_end, origins, horizon, 12.0)

    before = forecasts(values)
    changed = values.copy()
    changed[170:] += 50.0                      # the future after origin 169 changes
    after = forecasts(changed)
    keep = origins < 170
    np.testing.assert_allclose(after[keep], before[keep], atol=1e-8)
    assert not np.allclose(after[~keep], before[~keep])


def test_ets_forecast_from_the_fit_end_is_statsmodels_own():
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    values = seasonal_series()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = baselines.ets(values, 150, np.array([149]), 6, 12)[0]
        fit = ETSModel(values[:150], error="add", trend="add", damped_trend=True,
                       seasonal="add", seasonal_periods=12,
                       initialization_method="estimated").fit(disp=False)
    np.testing.assert_allclose(ours, np.asarray(fit.forecast(6)), atol=1e-8)


@pytest.mark.parametrize("season", [12, 1])
def test_theta_forecast_from_the_fit_end_is_statsmodels_own(season):
    from statsmodels.tsa.forecasting.theta import ThetaModel
    values = seasonal_series()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = {}
        ours = baselines.theta(values, 150, np.array([149]), 6, season, info)[0]
        fit = ThetaModel(values[:150], period=season, deseasonalize=season > 1).fit()
    np.testing.assert_allclose(ours, np.asarray(fit.forecast(6)), atol=1e-8)
    assert info["deseasonalised"] == (season > 1)


def test_conformal_half_widths_and_growth_past_the_horizon():
    residuals = np.arange(1, 11, dtype=float)[:, None] * np.array([[1.0, 2.0]])
    widths = evaluation.conformal(residuals)
    assert widths["80"] == [9.0, 18.0] and widths["95"] == [10.0, 20.0]
    grown = evaluation.widths_for({"80": [1.0, 2.0]}, 8)["80"]
    np.testing.assert_allclose(grown, [1, 2, 2 * np.sqrt(1.5), 2 * np.sqrt(2), 2 * np.sqrt(2.5),
                                       2 * np.sqrt(3), 2 * np.sqrt(3.5), 4])


def hybrid(window=10, horizon=3, seasonal=None):
    torch.manual_seed(0)
    linear = torch.randn(window + 1, horizon) * 0.1
    return Forecaster(lstm_ext.LSTMModel(1, 5, horizon), 0.5, 2.0, window, horizon,
                      linear=linear, seasonal=seasonal).eval()


SEASONAL = torch.tensor([2 * np.pi / 4.5, 0.3, 1.0, -0.2, 0.5, 0.1], dtype=torch.float64)


def test_seasonal_linear_part_matches_numpy_and_locks_the_phase():
    values = 3 * np.sin(2 * np.pi * np.arange(400) / 12.5 + 1.0) + 0.01 * np.arange(400)
    seasonal = windows.fit_seasonal(values, 300, 12.5)
    assert seasonal[0] == pytest.approx(2 * np.pi / 12.5)
    assert len(seasonal) == 2 + 2 * 4
    origins = np.arange(40, 380, 7)
    x, y = windows.make_windows(values, origins, 30, 5)
    z, ahead = windows.deseasonalise(x, seasonal, 5)
    np.testing.assert_allclose(z[:, 1:] - z[:, :-1], 0.01, atol=2e-3)  # the shape is gone
    np.testing.assert_allclose(x[:, -1:] + ahead + 0.01 * np.arange(1, 6), y, atol=2e-2)
    weights = np.random.default_rng(0).normal(size=(31, 5)) * 0.05
    model = Forecaster(lstm_ext.LSTMModel(1, 3, 5), 1.0, 1.0, 30, 5,
                       linear=torch.tensor(weights), seasonal=torch.tensor(seasonal)).double()
    with torch.no_grad():
        ours = model.base(torch.tensor(x[:, :, None])).numpy()
    np.testing.assert_allclose(ours, windows.linear_base(x, weights, seasonal, 5), atol=1e-4)


@pytest.mark.parametrize("seasonal", [None, SEASONAL], ids=["plain", "seasonal"])
def test_hybrid_forecaster_scripts_exports_and_streams(seasonal):
    model = hybrid(seasonal=seasonal)
    x = torch.randn(4, 10, 1).cumsum(1)
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), eager)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), eager)
        if seasonal is None:  # the linear part by hand: last + changes @ W + last * w + b
            w = model.linear
            base = x[:, -1, 0:1] + (x[:, 1:, 0] - x[:, :-1, 0]) @ w[:9] + \
                x[:, -1, 0:1] * w[9] + w[10]
            torch.testing.assert_close(model.base(x), base)
        for steps in (3, 10, 14):           # streaming equals forward on the values so far
            series = torch.randn(steps, 2, 1).cumsum(0)
            state = None
            for t in range(steps):
                pred, state = model.step(series[t], state)
            torch.testing.assert_close(pred, model(series.transpose(0, 1)), atol=1e-5,
                                       rtol=1e-5)


def test_command_reports_every_baseline_and_names_the_best(tmp_path, capsys):
    values = seasonal_series(240)
    lines = ["month,v"] + [f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{v:.5f}"
                           for i, v in enumerate(values)]
    csv = tmp_path / "m.csv"
    csv.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main(["train", "--csv", str(csv), "--epochs", "2", "--hidden-size", "4",
                           "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert status == 0
    for name in ("lstm", "persistence", "seasonal_naive_12", "ets", "arima", "theta"):
        assert f"\n{name} " in out
    result = json.loads((tmp_path / "run" / "metrics.json").read_text())
    best = min(result["metrics"], key=lambda k: result["metrics"][k]["mae"])
    assert result["best"] == best and f"best on test MAE: {best}" in out
    assert result["beats_baselines"] == (best == "lstm")
    for level in ("80", "95"):
        assert 0 <= result["coverage"][level] <= 1
        assert f"at nominal {level}%" in out
    assert set(result["per_lead"]["arima"]) == {"mae", "rmse", "mase", "smape"}
    assert len(result["per_lead"]["arima"]["mae"]) == 12
    # rolling-origin backtest of the same run
    status = cli.main(["backtest", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                       "--origins", "5", "--baselines", "naive"])
    out = capsys.readouterr().out
    assert status == 0 and "backtest: 5 origins" in out
    bt = json.loads((tmp_path / "run" / "backtest.json").read_text())
    assert len(bt["origins"]) == 5 and set(bt["overall"]) == {"lstm", "persistence",
                                                              "seasonal_naive_12"}
    assert len(bt["per_lead"]["lstm"]["mase"]) == 12
    assert (tmp_path / "run" / "backtest.png").stat().st_size > 0
