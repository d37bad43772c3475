"""`make deploy`'s last step: the same forecast from eager Python, from the C++
application running the TorchScript model and from it running the .pt2
AOTInductor package (whole window and streaming), side by side, with their
largest differences. Exit status 1 if any differs from Python by more than 1e-5.

    python examples/cpp/compare_deploy.py RUN_DIR APP
"""
import os
import subprocess
import sys

import numpy as np
import torch

from lstm_ext.forecast import artifacts

TOL = 1e-5


def app_rows(app, model, csv, *extra):
    done = subprocess.run([app, model, csv, *extra], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{app} {model}: {done.stderr.strip()}")
    return np.array([[float(v) for v in line.split(",")] for line in done.stdout.split()])


def main(run_dir: str, app: str) -> int:
    csv = os.path.join(run_dir, artifacts.LAST_WINDOW_FILE)
    ckpt = artifacts.load_checkpoint(os.path.join(run_dir, artifacts.CHECKPOINT))
    forecaster = artifacts.forecaster_from_checkpoint(ckpt).eval()
    values = np.loadtxt(csv, skiprows=1, ndmin=1)
    with torch.no_grad():
        python = forecaster(torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1))[0]
    python = python.double().numpy()
    rows = {"Python (eager, checkpoint)": python}
    for name, model in (("C++ TorchScript (model.pt)", "model.pt"),
                        ("C++ AOTInductor (model.pt2)", "model.pt2")):
        path = os.path.join(run_dir, model)
        rows[name] = app_rows(app, path, csv)[0]
        rows[name + " --stream"] = app_rows(app, path, csv, "--stream")[-1]
    width = max(map(len, rows))
    worst = 0.0
    for name, row in rows.items():
        diff = float(np.abs(row - python).max())
        worst = max(worst, diff)
        shown = ",".join(f"{v:.4f}" for v in row)
        print(f"{name:<{width}}  {shown}  max |diff| vs Python {diff:.2e}")
    verdict = "agree" if worst <= TOL else "DISAGREE"
    print(f"all {len(rows)} {verdict} to {TOL:g} (largest difference {worst:.2e})")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    sys.exit(main(sys.argv[1], sys.argv[2]))
