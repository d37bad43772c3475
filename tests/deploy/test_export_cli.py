"""`python -m lstm_ext export --format onnx|torchscript` from a checkpoint, and
`forecast --model` on what it wrote: the same forecast as the checkpoint's.
(The .pt2 format through the CLI is `make deploy`'s; its compile takes a
minute, and test_export_pt2.py covers the package itself.)"""
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lstm_ext", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "co2")
    done = cli("train", "--epochs", "1", "--baselines", "naive", "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def values(text):
    rows = [line.split(",") for line in text.strip().splitlines()[1:]]
    return np.array([float(r[1]) for r in rows])


@pytest.mark.parametrize("fmt,file", [("onnx", "model.onnx"), ("torchscript", "model.pt")])
def test_export_format_then_forecast(run_dir, fmt, file):
    out = os.path.join(run_dir, f"export-{fmt}")
    done = cli("export", "--format", fmt, "--checkpoint", os.path.join(run_dir, "checkpoint.pt"),
               "--out", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert os.path.exists(os.path.join(out, file)) and "wrote" in done.stdout
    ours = cli("forecast", "--model", os.path.join(out, file), "--steps", "13")
    ref = cli("forecast", "--checkpoint", os.path.join(run_dir, "checkpoint.pt"), "--steps", "13")
    assert ours.returncode == 0 and ref.returncode == 0, ours.stderr + ref.stderr
    np.testing.assert_allclose(values(ours.stdout), values(ref.stdout), atol=1e-4, rtol=0)


def test_unknown_format_is_one_line():
    done = cli("export", "--format", "tflite")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "tflite" in done.stderr
