"""``train`` under ``torchrun --nproc-per-node 2`` (DistributedDataParallel,
gloo on CPU): every batch sharded across the two processes, one checkpoint
writer, resumable; the training equals the single process's within float
rounding (weights 1e-5, losses and metrics rtol 1e-5) at the same thread count.
About 45 s on 2 shared cores: marked slow (make test-slow and CI run it)."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import ROOT

ARGS = ["--baselines", "naive", "--hidden-size", "8", "--patience", "100", "--lr", "0.02"]


def run(args, processes=1):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "lstm_ext"] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={processes}", "-m", "lstm_ext"]
    done = subprocess.run(launcher + ["train"] + [str(a) for a in args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo over localhost")
def test_two_processes_train_as_one_and_resume(tmp_path):
    t = np.arange(240)
    values = 10 + 0.02 * t + 2 * np.sin(2 * np.pi * t / 12) + \
        np.random.default_rng(0).normal(0, 0.2, 240)
    csv = tmp_path / "m.csv"
    pd.DataFrame({"month": pd.date_range("2000-01-01", periods=240, freq="MS")
                  .strftime("%Y-%m-%d"), "v": values}).to_csv(csv, index=False)
    run(["--csv", csv, "--epochs", "4", "--out", tmp_path / "one", *ARGS])
    run(["--csv", csv, "--epochs", "2", "--out", tmp_path / "two", *ARGS], processes=2)
    resumed = run(["--csv", csv, "--epochs", "4", "--out", tmp_path / "two", "--resume", *ARGS],
                  processes=2)
    assert "resuming from" in resumed.stdout and "in each of 2 processes" in resumed.stdout
    assert resumed.stdout.count("wrote ") == 1            # rank 0 alone reports and writes
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    for a, b in zip(one["history"], two["history"], strict=True):
        assert a["epoch"] == b["epoch"]
        np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(b["val_loss"], a["val_loss"], rtol=1e-5)
    for name, weight in one["model_state"].items():
        torch.testing.assert_close(two["model_state"][name], weight, atol=1e-5, rtol=1e-5)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"]
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())["metrics"]
    for method in m1:
        np.testing.assert_allclose(m2[method]["mae"], m1[method]["mae"], rtol=1e-5)
