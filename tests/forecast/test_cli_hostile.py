"""The forecasting application against hostile files and arguments: every bad
input gets one line on stderr naming the file or option, exit status 2; no
traceback, no hang, no silently wrong result, and loading a file never runs
code from it.

(Over 300 lines: every case reuses one small training run, a module-scoped
fixture, and the same runner; split, each part would train its own.)"""
import json
import os
import pickle
import shutil
import warnings

import numpy as np
import pytest
import torch

from helpers import damaged
from lstm_ext.forecast import cli

TINY = ["--window", "8", "--horizon", "2", "--season", "12", "--hidden-size", "4",
        "--patience", "100", "--baselines", "naive"]
WINDOW = "expected an integer from 2 to 1000000000"
COUNT = "expected an integer from 1 to 1000000000"
HUGE = "1" + "0" * 400


def write_csv(path, values):
    day = np.datetime64("2020-01-01")
    lines = ["t,v"] + [f"{day + i},{float(v)!r}" for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def series(n=120):
    t = np.arange(n)
    return 10 + 0.01 * t + np.sin(2 * np.pi * t / 12) + 0.1 * np.cos(t * 1.7)


def series_args(csv):
    return ["--csv", csv, "--column", "v", "--time-column", "t"]


def train_args(csv, out, *extra):
    return ["train", *series_args(csv), *TINY, "--out", out, *extra]


@pytest.fixture
def lstm(capsys):
    """Runs the command line in this process: (exit status, stdout, stderr lines),
    where the warnings a user would see count as stderr lines."""
    def run(*args):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                status = cli.main([str(a) for a in args])
            except SystemExit as exc:
                status = exc.code
        out, err = capsys.readouterr()
        return status, out, err.splitlines() + [f"warning: {w.message}" for w in caught]
    return run


def assert_one_line(result, *parts):
    status, _, lines = result
    assert status == 2 and len(lines) == 1, lines
    for part in parts:
        assert str(part) in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run (2 epochs) whose files the tests reuse (read only)."""
    root = tmp_path_factory.mktemp("trained")
    csv = write_csv(root / "small.csv", series())
    status = cli.main([str(a) for a in train_args(csv, root / "run", "--epochs", "2")])
    assert status == 0
    return csv, root / "run"


def saved_checkpoint(trained):
    return torch.load(trained[1] / "checkpoint.pt", weights_only=True)


def place(trained, tmp_path, command, writer):
    """Puts a file made by `writer(path)` where `command` reads a checkpoint;
    returns the command line and the file's path."""
    csv, _ = trained
    if command == "resume":
        path = tmp_path / "run" / "checkpoint.pt"
        path.parent.mkdir()
        writer(path)
        return train_args(csv, tmp_path / "run", "--epochs", "2", "--resume"), path
    path = tmp_path / "given.pt"
    writer(path)
    if command == "forecast":
        return ["forecast", "--checkpoint", path, *series_args(csv), "--steps", "3"], path
    return ["export", "--checkpoint", path, "--out", tmp_path / "exported"], path


COMMANDS = ["forecast", "export", "resume"]


# Finding 3: a checkpoint's pickle must never run code -----------------------------

class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def evil_writer(fmt, marker):
    obj = {"format": "lstm_ext.checkpoint/1", "p": Payload(marker)}

    def write(path):
        if fmt == "zip":
            torch.save(obj, path)
        elif fmt == "legacy":
            torch.save(obj, path, _use_new_zipfile_serialization=False)
        else:
            with open(path, "wb") as f:
                pickle.dump(obj, f)
    return write


@pytest.mark.parametrize("fmt", ["zip", "legacy", "pickle"])
@pytest.mark.parametrize("command", COMMANDS)
def test_checkpoint_code_never_runs(trained, tmp_path, lstm, fmt, command):
    marker = tmp_path / "PWNED"
    args, path = place(trained, tmp_path, command, evil_writer(fmt, marker))
    result = lstm(*args)
    assert not marker.exists()
    assert_one_line(result, path, "refused")


def test_real_files_load_and_resume_is_bit_for_bit_under_another_spelling(
        trained, tmp_path, lstm, monkeypatch):
    """Weights-only loading keeps optimizer, generator and history; the output
    folder given relatively, then absolutely, is the same folder (finding 8);
    checkpoint and exported model (with its model.json) forecast alike."""
    csv, run = trained
    monkeypatch.chdir(tmp_path)
    assert lstm(*train_args(csv, "again", "--epochs", "1"))[0] == 0
    status, out, lines = lstm(*train_args(csv, tmp_path / "again", "--epochs", "2", "--resume"))
    assert status == 0, lines
    assert "resuming from" in out
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == \
        json.loads((run / "metrics.json").read_text())
    status, out, _ = lstm("forecast", "--checkpoint", run / "checkpoint.pt", *series_args(csv),
                          "--steps", "3")
    assert status == 0 and len(out.splitlines()) == 4
    status, from_model, _ = lstm("forecast", "--model", run / "model.pt", "--csv", csv,
                                 "--steps", "3")
    assert status == 0 and from_model.splitlines()[0] == "time,v,lo80,hi80,lo95,hi95"
    np.testing.assert_allclose([float(r.split(",")[1]) for r in out.splitlines()[1:]],
                               [float(r.split(",")[1]) for r in from_model.splitlines()[1:]],
                               atol=1e-4)


# Finding 7: model.json, checkpoints and model files wrong in every way -------------

@pytest.mark.parametrize("text,parts", [
    ("{}", ["'window'", "missing"]),
    ("[]", ["expected a JSON object", "an array"]),
    ("not json at all", ["not a JSON file"]),
    ("\xff", ["not a JSON file"]),
    ('{"window": null, "horizon": 2}', ["'window'", WINDOW, "None"]),
    ('{"window": [8], "horizon": 2}', ["'window'", WINDOW, "[8]"]),
    ('{"window": true, "horizon": 2}', ["'window'", WINDOW, "True"]),
    ('{"window": Infinity, "horizon": 2}', ["'window'", WINDOW, "inf"]),
    ('{"window": 0, "horizon": 2}', ["'window'", WINDOW, "0"]),
    ('{"window": -5, "horizon": 2}', ["'window'", WINDOW, "-5"]),
    ('{"window": 8}', ["'horizon'", "missing"]),
    ('{"window": 9, "horizon": 2}', ["window 9", "window 8"]),
    ('{"window": 8, "horizon": 3}', ["horizon 3", "horizon 2"]),
    ('{"window": 8, "horizon": 2, "column": 5}', ["'column'", "5"]),
    # a stored frequency pandas does not know was reported as the option --freq
    ('{"window": 8, "horizon": 2, "freq": "abc"}', ["model.json: 'freq' abc: not a pandas"]),
    ('{"window": 8, "horizon": 2, "freq": "0D"}', ["'freq' 0D: expected a positive step"]),
])
def test_bad_model_json(trained, tmp_path, lstm, text, parts):
    csv, run = trained
    shutil.copy(run / "model.pt", tmp_path / "model.pt")
    meta = tmp_path / "model.json"
    meta.write_bytes(text.encode("latin-1"))
    assert_one_line(lstm("forecast", "--model", tmp_path / "model.pt", "--csv", csv), meta, *parts)


def drop(key):
    def change(ckpt):
        del ckpt[key]
    return change


def set_config(key, value):
    def change(ckpt):
        ckpt["config"][key] = value
    return change


def set_item(key, value):
    def change(ckpt):
        ckpt[key] = value
    return change


def set_scale(value):
    def change(ckpt):
        ckpt["scaler"]["scale"] = value
    return change


def no_optimizer_state(ckpt):
    ckpt["optimizer_state"] = {"state": {}, "param_groups": []}


def int_bias(ckpt):
    ckpt["best_state"]["fc.bias"] = ckpt["best_state"]["fc.bias"].long()


def huge_intervals(ckpt):
    ckpt["intervals"] = {k: [1e308] * len(v) for k, v in ckpt["intervals"].items()}


def set_adam(key, value):
    """One entry of the first weight's Adam state."""
    def change(ckpt):
        ckpt["optimizer_state"]["state"][0][key] = value
    return change


@pytest.mark.parametrize("change,parts", [
    (drop("config"), ["'config' is missing"]),
    (drop("scaler"), ["'scaler' is missing"]),
    (set_item("config", [1, 2]), ["'config'", "list"]),
    (set_item("scaler", "x"), ["'scaler'", "str"]),
    (set_config("window", "abc"), ["'window'", WINDOW, "'abc'"]),
    (set_config("window", 0), ["'window'", WINDOW]),
    (set_config("lr", float("nan")), ["'lr'", "expected a finite number > 0"]),
    (set_config("csv", 3), ["'csv'", "text or None"]),
    (set_config("hidden_size", 8), ["weights do not fit", "hidden_size 8"]),
    (set_config("num_layers", 2), ["weights do not fit", "num_layers 2"]),
    (set_config("horizon", 3), ["weights do not fit", "horizon 3"]),
    (set_config("extra", 1), ["unknown setting 'extra'"]),
    (set_config("freq", "abc"), ["config 'freq' abc: not a pandas frequency"]),
    (set_scale(-1.0), ["'scale'", "from 1.17549e-38 to 3.40282e+38", "-1.0"]),
    (set_item("best_state", None), ["'best_state'"]),
    (set_item("history", "long"), ["'history'"]),
    (set_item("best_epoch", 7), ["'best_epoch'"]),
    (no_optimizer_state, ["optimizer state"]),
    # bounds of -inf and inf in the forecast
    (huge_intervals, ["'intervals'", "half-widths from 0 to 1e38"]),
    # was the whole dict's repr, over several lines, naming no key
    (int_bias, ["'best_state'", "'fc.bias' is a torch.int64 tensor (torch.strided, on cpu)"]),
])
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_checkpoint_contents(trained, tmp_path, lstm, command, change, parts):
    ckpt = saved_checkpoint(trained)
    change(ckpt)
    args, path = place(trained, tmp_path, command, lambda p: torch.save(ckpt, p))
    assert_one_line(lstm(*args), path, *parts)
    assert not (tmp_path / "exported" / "model.json").exists()


def negative_second_moment(ckpt):
    state = ckpt["optimizer_state"]["state"][0]
    state["exp_avg_sq"] = -1 - state["exp_avg_sq"]


@pytest.mark.parametrize("change,parts", [
    (set_adam("exp_avg", torch.tensor(0.5)), ["'exp_avg' has shape []"]),  # was a traceback
    (set_adam("step", torch.tensor(-1.0)), ["'step'", "expected one number >= 1"]),  # was one
    (set_adam("step", torch.tensor(0.0)), ["'step'", "expected one number >= 1"]),
    (negative_second_moment, ["'exp_avg_sq' holds negative values"]),  # NaN weights
])
def test_bad_optimizer_state_is_refused_on_resume(trained, tmp_path, lstm, change, parts):
    ckpt = saved_checkpoint(trained)
    change(ckpt)
    args, path = place(trained, tmp_path, "resume", lambda p: torch.save(ckpt, p))
    assert_one_line(lstm(*args), path, *parts)


@pytest.mark.parametrize("command", COMMANDS)
def test_torchscript_file_as_checkpoint(trained, tmp_path, lstm, command):
    linear = torch.jit.script(torch.nn.Linear(2, 2))
    args, path = place(trained, tmp_path, command, lambda p: linear.save(str(p)))
    assert_one_line(lstm(*args), path, "TorchScript model, not a training checkpoint")


def test_scripted_linear_as_model(trained, tmp_path, lstm):
    csv, run = trained
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "model.pt"))
    shutil.copy(run / "model.json", tmp_path / "model.json")
    assert_one_line(lstm("forecast", "--model", tmp_path / "model.pt", "--csv", csv),
                    tmp_path / "model.pt", "not an lstm_ext Forecaster", "Linear")


def test_scripted_impostor_that_fails(trained, tmp_path, lstm):
    csv, run = trained

    class Forecaster(torch.nn.Module):  # the right name, attributes and methods
        __constants__ = ["input_size", "window", "horizon", "scale", "target_scale"]

        def __init__(self):
            super().__init__()
            self.input_size, self.window, self.horizon = 1, 8, 2
            self.scale, self.target_scale = 1.0, 1.0

        def forward(self, x):
            raise RuntimeError("boom")

        @torch.jit.export
        def step(self, x: torch.Tensor):
            return x

    torch.jit.script(Forecaster()).save(str(tmp_path / "model.pt"))
    shutil.copy(run / "model.json", tmp_path / "model.json")
    assert_one_line(lstm("forecast", "--model", tmp_path / "model.pt", "--csv", csv),
                    tmp_path / "model.pt", "boom")


def test_weights_that_overflow_give_no_inf_forecast(trained, tmp_path, lstm):
    csv, _ = trained
    ckpt = saved_checkpoint(trained)
    ckpt["best_state"]["fc.bias"].fill_(3e38)
    ckpt["scaler"]["target_scale"] = 1e3
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    assert_one_line(lstm("forecast", "--checkpoint", tmp_path / "checkpoint.pt", *series_args(csv)),
                    tmp_path / "checkpoint.pt", "not finite")


# Finding 8: command-line arguments --------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--batch-size", "0"], f"argument --batch-size: {COUNT}, but got 0"),
    (["--batch-size", "-4"], f"argument --batch-size: {COUNT}, but got -4"),
    (["--season", "0"], f"argument --season: {COUNT}, but got 0"),
    (["--window", "1"], f"argument --window: {WINDOW}, but got 1"),
    (["--window", "abc"], f"argument --window: {WINDOW}, but got 'abc'"),
    (["--window", HUGE], f"argument --window: {WINDOW}, but got 1000"),
    (["--horizon", "0"], f"argument --horizon: {COUNT}, but got 0"),
    (["--hidden-size", "0"], "argument --hidden-size: expected an integer from 1 to 4096"),
    (["--num-layers", "0"], "argument --num-layers: expected an integer from 1 to 16, but got 0"),
    (["--num-layers", "17"], "argument --num-layers: expected an integer from 1 to 16"),
    (["--epochs", "0"], f"argument --epochs: {COUNT}, but got 0"),
    (["--epochs", HUGE], f"argument --epochs: {COUNT}, but got 100000"),
    (["--patience", "0"], f"argument --patience: {COUNT}, but got 0"),
    (["--lr", "0"], "argument --lr: expected a finite number > 0, but got 0.0"),
    (["--lr", "-0.001"], "argument --lr: expected a finite number > 0"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, but got nan"),
    (["--lr", "inf"], "argument --lr: expected a finite number > 0, but got inf"),
    (["--lr", HUGE], "argument --lr: expected a finite number > 0, but got inf"),
    (["--seed", str(2 ** 64)], "argument --seed: expected an integer from"),
    (["forecast", "--steps", "0"], "argument --steps: expected an integer from 1 to 1000000"),
])
def test_option_ranges(trained, tmp_path, lstm, args, message):
    csv, run = trained
    if args[0] == "forecast":
        args = ["forecast", "--model", run / "model.pt", *series_args(csv), *args[1:]]
    else:  # otherwise valid settings: code as it was trains quickly, into tmp_path
        args = train_args(csv, tmp_path / "run", "--epochs", "1", *args)
    assert_one_line(lstm(*args), message, "(see python -m lstm_ext")  # and no usage lines


def test_training_that_diverges_says_so(trained, tmp_path, lstm):
    csv, _ = trained
    status, _, lines = lstm(*train_args(csv, tmp_path / "run", "--epochs", "2", "--lr", "1e30"))
    assert status == 2 and "training diverged in epoch 1" in lines[-1] and "--lr" in lines[-1]


def test_season_longer_than_the_series(trained, tmp_path, lstm):
    csv, _ = trained
    args = train_args(csv, tmp_path / "run", "--epochs", "1") + ["--season", "100000"]
    assert_one_line(lstm(*args), "small.csv", "--season 100000", "--season <= 102")


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_out_that_is_no_folder(trained, tmp_path, lstm, where):
    csv, run = trained
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "run"
    assert_one_line(lstm(*train_args(csv, out, "--epochs", "1")), "--out", out)
    assert_one_line(lstm("export", "--checkpoint", run / "checkpoint.pt", "--out", out),
                    "--out", out)


@pytest.mark.parametrize("where", ["folder", "below a file"])
def test_forecast_output_that_cannot_be_written(trained, tmp_path, lstm, where):
    csv, run = trained
    (tmp_path / "blocker").write_text("x")
    output = tmp_path if where == "folder" else tmp_path / "blocker" / "f.csv"
    assert_one_line(lstm("forecast", "--model", run / "model.pt", "--csv", csv, "-o", output),
                    "--output", output)


@pytest.mark.parametrize("factor", [1e39, 1e307])
def test_values_beyond_float32_are_refused(trained, tmp_path, lstm, factor):
    csv = write_csv(tmp_path / "huge.csv", series() * factor)
    assert_one_line(lstm(*train_args(csv, tmp_path / "run", "--epochs", "1")),
                    "huge.csv", "column 'v', line 2", "too large", "float32")
    assert_one_line(lstm("forecast", "--model", trained[1] / "model.pt", "--csv", csv),
                    "huge.csv", "column 'v', line 2", "too large", "float32")


def test_changes_too_small_for_float32_are_refused(tmp_path, lstm):
    csv = write_csv(tmp_path / "tiny.csv", series() * 1e-300)
    assert_one_line(lstm(*train_args(csv, tmp_path / "run", "--epochs", "1")),
                    "tiny.csv", "column 'v'", "too small", "float32")


def test_changes_too_far_beyond_their_typical_size_are_refused(tmp_path, lstm):
    values = np.where(np.arange(120) % 2 == 0, 0.0, 1e-20)
    values[110:] = 1.0                  # a jump of 1e20 typical changes in the test part
    csv = write_csv(tmp_path / "jump.csv", values)
    assert_one_line(lstm(*train_args(csv, tmp_path / "run", "--epochs", "1")),
                    "jump.csv", "column 'v'", "float32")


# Damaged files: torch.load and torch.jit.load do not check a zip's checksums ---------

@pytest.mark.parametrize("how,parts", [
    ("cut", ["a zip archive cut short or damaged", "was the copy interrupted?"]),
    # loaded as a different weight before: exit status 0
    ("flip", ["a damaged zip archive", "/data/", "Bad CRC-32"]),
])
@pytest.mark.parametrize("command", COMMANDS)
def test_damaged_checkpoint(trained, tmp_path, lstm, command, how, parts):
    args, path = place(trained, tmp_path, command, damaged(trained[1] / "checkpoint.pt", how))
    assert_one_line(lstm(*args), path, "not a readable checkpoint", *parts)


@pytest.mark.parametrize("how,parts", [
    ("cut", ["a zip archive cut short or damaged"]),  # was miniz's five sentences
    ("flip", ["Bad CRC-32"]),                         # was a forecast from another weight
    ("code", ["/code/", "Bad CRC-32"]),               # TorchScript's code, deflated
    ("deflate", ["/code/", "invalid block type"]),
])
def test_damaged_model_file(trained, tmp_path, lstm, how, parts):
    csv, run = trained
    damaged(run / "model.pt", how)(tmp_path / "model.pt")
    shutil.copy(run / "model.json", tmp_path / "model.json")
    assert_one_line(lstm("forecast", "--model", tmp_path / "model.pt", "--csv", csv),
                    tmp_path / "model.pt", "not a readable model file", *parts)
