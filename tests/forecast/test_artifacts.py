"""The files of a run, beyond what the command-line tests see: exported models
of the layout before lstm_ext.forecast still load, model.json has one writer,
and the command line's defaults are the settings'."""
import json
import os
import re
from dataclasses import asdict

import pytest
import torch

import lstm_ext
from lstm_ext.forecast import artifacts, cli, series
from lstm_ext.forecast.forecaster import Forecaster
from lstm_ext.forecast.settings import DEFAULT_OUT, FORECAST_STEPS, TrainConfig


@pytest.mark.parametrize("module", ["lstm_ext.forecaster", "lstm_ext.forecast.forecaster"],
                         ids=["before_the_move", "now"])
def test_scripted_forecaster_of_either_layout_loads(tmp_path, module):
    """TorchScript records the module a class was defined in: a Forecaster
    exported from lstm_ext.forecaster (before the application moved to
    lstm_ext.forecast) must load and forecast as one exported now."""
    torch.manual_seed(0)
    cls = Forecaster if module == Forecaster.__module__ else \
        type("Forecaster", (Forecaster,), {"__module__": module})
    eager = cls(lstm_ext.LSTMModel(1, 4, 2), scale=0.5, target_scale=2.0, window=8,
                horizon=2).eval()
    path = tmp_path / "model.pt"
    torch.jit.script(eager).save(str(path))
    (tmp_path / "model.json").write_text(json.dumps({"window": 8, "horizon": 2}))
    loaded, _ = artifacts.load_exported(str(path))
    # (a module scripted before with other constants makes TorchScript add
    # ".___torch_mangle_N" before the class name; check_scripted ignores it)
    qualified = re.sub(r"\.___torch_mangle_\d+", "", loaded._c._type().qualified_name())
    assert qualified == f"__torch__.{module}.Forecaster"
    assert qualified in artifacts.FORECASTER_TYPES
    x = torch.randn(3, 8, 1).cumsum(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), eager(x))


def test_both_forecaster_type_names_are_accepted():
    assert artifacts.FORECASTER_TYPES == ("__torch__.lstm_ext.forecaster.Forecaster",
                                          "__torch__.lstm_ext.forecast.forecaster.Forecaster")
    assert artifacts.FORECASTER_NAMES == {"Forecaster"}


SCALER = {"scale": 0.5, "target_scale": 2.0}
# what training fills in from the embedded weekly series' frequency
RESOLVED = {"freq": "W-SAT", "window": 104, "horizon": 13, "season": 52, "period": 365.25 / 7}


@pytest.mark.parametrize("settings,column,time_column", [
    ({}, "co2", "date"),                                         # the embedded series
    ({"csv": "a.csv", "column": "v", "time_column": "t"}, "v", "t"),
    ({"csv": "a.csv"}, None, None),       # the file's one numeric column: found when read
])
def test_model_json_from_a_checkpoint_names_the_columns_read(settings, column, time_column):
    meta = artifacts.model_meta(TrainConfig(**settings, **RESOLVED), SCALER, best_epoch=3)
    assert meta == {"format": artifacts.MODEL_FORMAT, "column": column,
                    "time_column": time_column, "window": 104, "horizon": 13, "season": 52,
                    "scale": 0.5, "target_scale": 2.0, "input_size": 1, "freq": "W-SAT",
                    "period": 365.25 / 7, "intervals": None, "bf16": False, "best_epoch": 3}


def test_model_json_from_training_adds_the_series_and_metrics():
    data = series.load_series()
    metrics = {"lstm": {"mae": 1.0, "rmse": 2.0}}
    intervals = {"80": [1.0] * 13, "95": [2.0] * 13}
    cfg = TrainConfig(**RESOLVED)
    meta = artifacts.model_meta(cfg, SCALER, 3, data, metrics, intervals)
    exported = artifacts.model_meta(cfg, SCALER, 3, intervals=intervals)
    assert {k: v for k, v in meta.items() if k in exported} == exported
    assert list(meta) == ["format", "source", "column", "time_column", "window", "horizon",
                          "season", "scale", "target_scale", "input_size", "freq", "period",
                          "intervals", "last_time", "time_step_days", "filled_missing",
                          "bf16", "best_epoch", "test_metrics"]
    assert meta["last_time"] == "2001-12-29" and meta["intervals"] == intervals
    assert meta["source"] == "mauna_loa_co2_weekly.csv" and meta["filled_missing"] == 59
    assert meta["time_step_days"] == 7.0 and meta["test_metrics"] == metrics


def test_command_line_defaults_are_the_settings():
    parser = cli.build_parser()
    train = vars(parser.parse_args(["train"]))
    assert {k: train[k] for k in asdict(TrainConfig())} == asdict(TrainConfig())
    forecast = parser.parse_args(["forecast"])
    assert forecast.steps == FORECAST_STEPS
    assert forecast.model == os.path.join(DEFAULT_OUT, artifacts.MODEL_FILE)
    assert parser.parse_args(["export"]).checkpoint == \
        os.path.join(DEFAULT_OUT, artifacts.CHECKPOINT)


def test_embedded_series_ships_inside_the_package():
    assert series.DEFAULT_CSV.startswith(lstm_ext.__path__[0])
    assert series.DEFAULT_CSV.endswith("forecast/data/mauna_loa_co2_weekly.csv")
