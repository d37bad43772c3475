"""examples/cpp as ``make cpp`` builds it: the op library compiled by CMake from
csrc/ (the sources setup.py compiles, listed in csrc/sources.txt) into a
library without Python, and the application running a model on it. The
default suite's application uses the package's library instead
(helpers.build_cpp_app): this compile of csrc/ is the slow part, so the test
runs with make test-slow and in CI."""
import os
import subprocess

import numpy as np
import pytest
import torch

import lstm_ext
from helpers import ROOT, build_cpp_app, parse_rows, run_app

BUILD = os.path.join(ROOT, "examples", "cpp", "build")


@pytest.mark.slow
def test_cmake_compiles_the_op_library_without_python_and_the_app_runs_on_it(tmp_path):
    app = build_cpp_app(BUILD, package_library=False)
    library = os.path.join(BUILD, "liblstm_ext_ops.so")
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        assert "LSTM_EXT_OPS_LIBRARY:FILEPATH=\n" in f.read(), "compiled here, not copied"
    with open(library, "rb") as built, open(lstm_ext.library_path(), "rb") as package:
        assert built.read() != package.read()
    deps = subprocess.run(["ldd", library], capture_output=True, text=True, check=True).stdout
    assert "libtorch_cpu" in deps, deps
    assert "libpython" not in deps and "torch_python" not in deps, deps
    torch.manual_seed(0)
    model = lstm_ext.LSTMModel(3, 6, 2, num_layers=2).eval()
    path = tmp_path / "m.pt"
    torch.jit.script(model).save(str(path))
    x = torch.randn(1, 7, 3)
    rows = "\n".join(",".join(f"{v:.9g}" for v in row) for row in x[0].tolist())
    done = run_app(app, path, "-", "--op-library", library, stdin=rows)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(parse_rows(done.stdout), model(x).detach().numpy(), atol=1e-5)
