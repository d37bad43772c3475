"""``train --bf16``: mixed-precision training (bfloat16 autocast, float32
weights), recorded in the checkpoint, model.json and metrics.json; forecasting
and exporting from such a run (float32 models); a resume in the other
precision refused. Tiny runs in this process, a few seconds in all."""
import json
import shutil

import numpy as np
import pytest
import torch

from lstm_ext.forecast import artifacts, cli

TINY = ["--window", "8", "--horizon", "2", "--season", "12", "--hidden-size", "4",
        "--patience", "100", "--baselines", "naive"]


def write_csv(path, n=120):
    t = np.arange(n)
    values = 10 + 0.01 * t + np.sin(2 * np.pi * t / 12) + 0.1 * np.cos(t * 1.7)
    day = np.datetime64("2020-01-01")
    rows = "".join(f"{day + i},{float(v)!r}\n" for i, v in enumerate(values))
    path.write_text("t,v\n" + rows)
    return path


@pytest.fixture
def lstm(capsys):
    """Runs the command line in this process: (exit status, stdout, stderr lines)."""
    def run(*args):
        try:
            status = cli.main([str(a) for a in args])
        except SystemExit as exc:
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err.splitlines()
    return run


def train(csv, out, *extra):
    return ["train", "--csv", csv, "--column", "v", "--time-column", "t", *TINY,
            "--out", out, *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run in each precision (3 epochs): {"bf16": folder, "fp32": folder}."""
    root = tmp_path_factory.mktemp("bf16")
    csv = write_csv(root / "small.csv")
    folders = {}
    for name, flag in (("bf16", ["--bf16"]), ("fp32", [])):
        folders[name] = root / name
        assert cli.main([str(a) for a in train(csv, folders[name], "--epochs", "3", *flag)]) == 0
    return csv, folders


def test_bf16_is_in_the_help(lstm):
    status, out, _ = lstm("train", "--help")
    assert status == 0 and "--bf16" in out and "bfloat16" in out


def test_bf16_run_records_its_precision(runs):
    _, folders = runs
    for name, bf16 in (("bf16", True), ("fp32", False)):
        out = folders[name]
        assert json.loads((out / "model.json").read_text())["bf16"] is bf16
        assert json.loads((out / "metrics.json").read_text())["bf16"] is bf16
        ckpt = artifacts.load_checkpoint(str(out / "checkpoint.pt"))
        assert ckpt["config"]["bf16"] is bf16
        # the master weights (and so the exported model's) are float32 in both
        assert all(v.dtype == torch.float32 for v in ckpt["best_state"].values())
        assert all(v.dtype == torch.float32 for v in ckpt["model_state"].values())
        for name_ in ("model.pt", "forecast.png", "last_window.csv"):
            assert (out / name_).stat().st_size > 0


def test_the_report_states_the_precision(tmp_path, lstm):
    csv = write_csv(tmp_path / "s.csv")
    status, out, _ = lstm(*train(csv, tmp_path / "b", "--epochs", "1", "--bf16"))
    assert status == 0
    assert "precision: bfloat16 mixed" in out and "evaluated in float32" in out
    assert "lstm" in out and "persistence" in out          # the metrics table as usual
    status, out, _ = lstm(*train(csv, tmp_path / "f", "--epochs", "1"))
    assert status == 0 and "precision: float32" in out and "bfloat16" not in out


def test_forecast_and_export_from_a_bf16_run(runs, tmp_path, lstm):
    csv, folders = runs
    ckpt = folders["bf16"] / "checkpoint.pt"
    series = ["--csv", csv, "--column", "v", "--time-column", "t", "--steps", "5"]
    status, from_ckpt, err = lstm("forecast", "--checkpoint", ckpt, *series)
    assert status == 0, err
    status, from_model, err = lstm("forecast", "--model", folders["bf16"] / "model.pt", *series)
    assert status == 0, err
    assert from_ckpt.splitlines()[0] == from_model.splitlines()[0] == \
        "time,v,lo80,hi80,lo95,hi95"
    a = [float(line.split(",")[1]) for line in from_ckpt.splitlines()[1:]]
    b = [float(line.split(",")[1]) for line in from_model.splitlines()[1:]]
    assert len(a) == 5 and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, atol=1e-4)
    status, _, err = lstm("export", "--checkpoint", ckpt, "--out", tmp_path)
    assert status == 0, err
    assert json.loads((tmp_path / "model.json").read_text())["bf16"] is True
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    assert all(p.dtype == torch.float32 for p in scripted.parameters())


@pytest.mark.parametrize("trained_in,resumed_with,message", [
    ("bf16", [], "was trained in bfloat16 mixed precision (--bf16); resume it with --bf16"),
    ("fp32", ["--bf16"], "was trained in float32; resume it without --bf16"),
])
def test_resume_in_the_other_precision_is_refused(runs, tmp_path, lstm, trained_in,
                                                  resumed_with, message):
    csv, folders = runs
    out = tmp_path / "run"
    shutil.copytree(folders[trained_in], out)
    before = (out / "checkpoint.pt").read_bytes()
    status, _, err = lstm(*train(csv, out, "--epochs", "4", "--resume", *resumed_with))
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_in_bf16_continues(runs, tmp_path, lstm):
    csv, folders = runs
    out = tmp_path / "run"
    shutil.copytree(folders["bf16"], out)
    status, stdout, err = lstm(*train(csv, out, "--epochs", "4", "--resume", "--bf16"))
    assert status == 0, err
    assert "resuming from" in stdout and "precision: bfloat16 mixed" in stdout
    ckpt = artifacts.load_checkpoint(str(out / "checkpoint.pt"))
    assert ckpt["epoch"] == 4 and ckpt["config"]["bf16"] is True


def test_a_checkpoint_from_before_bf16_is_a_float32_one(runs, tmp_path, lstm):
    """Checkpoints written before the setting existed lack it: float32 runs."""
    csv, folders = runs
    ckpt = torch.load(folders["fp32"] / "checkpoint.pt", weights_only=True)
    del ckpt["config"]["bf16"]
    out = tmp_path / "run"
    out.mkdir()
    torch.save(ckpt, out / "checkpoint.pt")
    assert artifacts.load_checkpoint(str(out / "checkpoint.pt"))["config"]["bf16"] is False
    status, _, err = lstm(*train(csv, out, "--epochs", "4", "--resume", "--bf16"))
    assert status == 2 and "was trained in float32" in err[0], err
    status, _, err = lstm(*train(csv, out, "--epochs", "4", "--resume"))
    assert status == 0, err


def test_a_checkpoint_bf16_that_is_not_a_bool_is_refused(runs, tmp_path, lstm):
    _, folders = runs
    ckpt = torch.load(folders["bf16"] / "checkpoint.pt", weights_only=True)
    ckpt["config"]["bf16"] = "yes"
    torch.save(ckpt, tmp_path / "c.pt")
    status, _, err = lstm("export", "--checkpoint", tmp_path / "c.pt", "--out", tmp_path / "e")
    assert status == 2 and len(err) == 1 and "config 'bf16': expected true or false" in err[0]
