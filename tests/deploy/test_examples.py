"""The examples, run as a user runs them."""
import subprocess
import sys

from helpers import ROOT


def test_seed_tutorial_example_runs():
    done = subprocess.run([sys.executable, "examples/seed_tutorial.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    epochs = [line for line in done.stdout.splitlines() if line.startswith("Epoch [")]
    assert len(epochs) == 10 and epochs[-1].startswith("Epoch [100/100], Loss: ")
    first = float(epochs[0].rsplit(" ", 1)[1])
    last = float(epochs[-1].rsplit(" ", 1)[1])
    assert last < first, "training did not reduce the loss"
