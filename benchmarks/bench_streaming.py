"""Streaming latency: one time step of (batch 1, input 1, hidden 64) with the
state carried across calls, as a service runs it. The C++ application
(examples/cpp, built with CMake if needed) vs the same step in eager Python
(lstm_ext.LSTMModel.step, and scripted) vs torch.nn.LSTM + Linear.
Run: python benchmarks/bench_streaming.py [--quick]"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lstm_ext  # noqa: E402
from common import header, median_ms, parse_args, print_table  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "examples", "cpp", "build")
APP = os.path.join(BUILD, "lstm_ext_predict")


def build_app():
    if not os.path.exists(os.path.join(BUILD, "CMakeCache.txt")):
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        subprocess.run(["cmake", "-S", os.path.join(ROOT, "examples", "cpp"), "-B", BUILD,
                        *generator, "-DCMAKE_BUILD_TYPE=Release",
                        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"], check=True,
                       capture_output=True)
    subprocess.run(["cmake", "--build", BUILD, "-j2"], check=True, capture_output=True)


def main():
    args = parse_args(__doc__)
    header("Streaming: one step at batch 1, input 1, hidden 64")
    torch.manual_seed(0)
    model = lstm_ext.LSTMModel(1, 64, 1).eval()
    scripted = torch.jit.script(model)
    theirs, head = nn.LSTM(1, 64), nn.Linear(64, 1)
    x = torch.randn(1, 1)
    rows = []
    with torch.no_grad():
        _, state = model.step(x)
        t_eager = median_ms(lambda: model.step(x, state), args.min_time) * 1e3
        t_script = median_ms(lambda: scripted.step(x, state), args.min_time) * 1e3
        hx = (torch.zeros(1, 1, 64), torch.zeros(1, 1, 64))
        xs = x.reshape(1, 1, 1)

        def nn_step():
            out, new = theirs(xs, hx)
            return head(out[-1]), new
        t_nn = median_ms(nn_step, args.min_time) * 1e3
    build_app()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        scripted.save(path)
        csv = os.path.join(tmp, "steps.csv")
        np.savetxt(csv, np.random.default_rng(0).normal(size=(500, 1)))
        done = subprocess.run([APP, path, csv, "--stream", "--latency"], capture_output=True,
                              text=True, check=True)
    found = re.search(r"median ([\d.]+) us, p90 ([\d.]+) us", done.stderr)
    t_cpp, p90_cpp = float(found.group(1)), float(found.group(2))
    rows.append(["C++ app (lstm_ext_predict --stream)", f"{t_cpp:.1f}", f"p90 {p90_cpp:.1f}"])
    rows.append(["Python, LSTMModel.step (eager)", f"{t_eager:.1f}", ""])
    rows.append(["Python, LSTMModel.step (scripted)", f"{t_script:.1f}", ""])
    rows.append(["Python, torch.nn.LSTM + Linear", f"{t_nn:.1f}", ""])
    print_table(["one streaming step", "median us", ""], rows)


if __name__ == "__main__":
    main()
