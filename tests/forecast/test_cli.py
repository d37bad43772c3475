"""The main job from the command line: train, evaluate, resume, forecast, export."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT
from lstm_ext.forecast import artifacts, forecaster

QUICK = ["--epochs", "6", "--patience", "100", "--hidden-size", "16", "--baselines", "naive"]


def cli_run(*args):
    return subprocess.run([sys.executable, "-m", "lstm_ext", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    done = cli_run("train", *QUICK, "--out", out)
    assert done.returncode == 0, done.stderr
    return out, done


def test_train_beats_persistence_and_writes_everything(trained):
    out, done = trained
    assert "59 missing filled by interpolation in time" in done.stdout
    assert "persistence" in done.stdout and "seasonal_naive_52" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["lstm"]["mae"] < metrics["persistence"]["mae"]
    for name in ("model.pt", "model.json", "checkpoint.pt", "forecast.png", "curves.png",
                 "last_window.csv"):
        assert (out / name).stat().st_size > 0, name
    meta = json.loads((out / "model.json").read_text())
    assert meta["window"] == 104 and meta["horizon"] == 13 and meta["column"] == "co2"


def test_same_seed_same_metrics(trained, tmp_path):
    out, _ = trained
    again = cli_run("train", *QUICK, "--out", tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "metrics.json").read_text()) == \
        json.loads((out / "metrics.json").read_text())


def test_resume_continues_to_the_same_result(trained, tmp_path):
    out, _ = trained
    first = cli_run("train", *QUICK[:1], "3", *QUICK[2:], "--out", tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = cli_run("train", *QUICK, "--out", tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert json.loads((tmp_path / "metrics.json").read_text()) == \
        json.loads((out / "metrics.json").read_text())


def test_resume_with_other_settings_is_refused(trained, tmp_path):
    out, _ = trained
    first = cli_run("train", *QUICK[:1], "2", *QUICK[2:], "--out", tmp_path)
    assert first.returncode == 0
    other = cli_run("train", "--epochs", "4", "--hidden-size", "8", "--out", tmp_path, "--resume",
                    "--baselines", "naive")
    assert other.returncode == 2 and "was written with other settings" in other.stderr


def test_interrupted_save_leaves_the_old_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    artifacts.save_atomic({"format": "x", "n": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        artifacts.save_atomic({"n": 2, "bad": Unpicklable()}, path)
    assert torch.load(path)["n"] == 1


def test_forecast_from_export_equals_forecast_from_checkpoint(trained, tmp_path):
    out, _ = trained
    a = cli_run("forecast", "--model", out / "model.pt", "--steps", "30")
    b = cli_run("forecast", "--checkpoint", out / "checkpoint.pt", "--steps", "30")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    rows_a = [line.split(",") for line in a.stdout.strip().splitlines()[1:]]
    rows_b = [line.split(",") for line in b.stdout.strip().splitlines()[1:]]
    assert len(rows_a) == 30 and rows_a[0][0] == "2002-01-05"
    np.testing.assert_allclose([float(r[1]) for r in rows_a], [float(r[1]) for r in rows_b],
                               atol=1e-4)
    export = cli_run("export", "--checkpoint", out / "checkpoint.pt", "--out", tmp_path)
    assert export.returncode == 0, export.stderr
    c = cli_run("forecast", "--model", tmp_path / "model.pt", "--steps", "30")
    assert c.stdout == a.stdout


def test_export_writes_the_model_json_training_wrote(trained, tmp_path):
    """model.json has one writer: export gives what training gave, less what
    only training knows (the series' source, times and gaps, test metrics)."""
    out, _ = trained
    done = cli_run("export", "--checkpoint", out / "checkpoint.pt", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    trained_meta = json.loads((out / "model.json").read_text())
    exported = json.loads((tmp_path / "model.json").read_text())
    assert exported == {k: v for k, v in trained_meta.items() if k in exported}
    assert set(trained_meta) - set(exported) == {"source", "last_time", "time_step_days",
                                                  "filled_missing", "test_metrics"}


def test_user_csv_trains_without_code_changes(tmp_path):
    t = np.arange(400)
    values = 10 + 0.01 * t + np.sin(2 * np.pi * t / 12)
    lines = ["when,sales"] + [f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{v:.5f}"
                              for i, v in enumerate(values)]
    lines[5] = lines[5].split(",")[0] + ","        # a gap
    csv = tmp_path / "sales.csv"
    csv.write_text("\n".join(lines) + "\n")
    done = cli_run("train", "--csv", csv, "--column", "sales", "--time-column", "when",
                   "--window", "24", "--horizon", "3", "--season", "12", "--epochs", "3",
                   "--baselines", "naive", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert "1 missing filled" in done.stdout
    fc = cli_run("forecast", "--model", tmp_path / "run" / "model.pt", "--csv", csv, "--steps", "5")
    assert fc.returncode == 0, fc.stderr
    assert fc.stdout.splitlines()[0] == "time,sales,lo80,hi80,lo95,hi95"
    assert fc.stdout.splitlines()[1].startswith("2033-05-01,")   # calendar months


@pytest.mark.parametrize("args,message", [
    (["train", "--csv", "/nonexistent.csv", "--column", "v"], "no such file"),
    (["train", "--column", "nope"], "no column 'nope'"),
    (["train", "--window", "5000"], "too few for --window 5000"),
    (["forecast", "--model", "/nonexistent/model.pt"], "no such model file"),
    (["forecast", "--checkpoint", "/nonexistent/ck.pt"], "no such checkpoint"),
])
def test_cli_errors_are_one_clear_line(args, message):
    done = cli_run(*args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_corrupt_checkpoint_and_model(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    done = cli_run("forecast", "--checkpoint", bad)
    assert done.returncode == 2 and "not a readable checkpoint" in done.stderr
    torch.save({"something": 1}, bad)
    done = cli_run("export", "--checkpoint", bad)
    assert done.returncode == 2 and "not an lstm_ext checkpoint" in done.stderr
    model = tmp_path / "model.pt"
    model.write_bytes(b"garbage")
    done = cli_run("forecast", "--model", model)
    assert done.returncode == 2 and "not a TorchScript model file" in done.stderr


def test_recursive_forecast_feeds_predictions_back():
    class Echo(torch.nn.Module):
        def forward(self, x):
            return x[:, -2:, 0] + 1

    out = forecaster.recursive_forecast(Echo(), np.arange(10.0), window=4, steps=5)
    np.testing.assert_allclose(out, [9, 10, 10, 11, 11])
