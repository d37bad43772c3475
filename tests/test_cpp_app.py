"""The C++ application, built with CMake against the installed torch: it loads a
scripted model without Python and prints what Python computes (1e-5)."""
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

import lstm_ext
from lstm_ext.forecaster import Forecaster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "examples", "cpp", "build")
APP = os.path.join(BUILD, "lstm_ext_predict")

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


@pytest.fixture(scope="module")
def app():
    """Configures once, then rebuilds incrementally: a cached build is reused."""
    if not os.path.exists(os.path.join(BUILD, "CMakeCache.txt")):
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        subprocess.run(["cmake", "-S", os.path.join(ROOT, "examples", "cpp"), "-B", BUILD,
                        *generator, "-DCMAKE_BUILD_TYPE=Release",
                        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
                       check=True, capture_output=True, timeout=300)
    done = subprocess.run(["cmake", "--build", BUILD, "-j2"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return APP


def run(app, *args, stdin=None):
    return subprocess.run([app, *map(str, args)], capture_output=True, text=True, input=stdin,
                          timeout=120)


def parse(stdout):
    return np.array([[float(v) for v in line.split(",")] for line in stdout.strip().splitlines()])


def test_op_library_has_no_python_dependency(app):
    deps = subprocess.run(["ldd", os.path.join(BUILD, "liblstm_ext_ops.so")],
                          capture_output=True, text=True).stdout
    assert "libpython" not in deps and "torch_python" not in deps
    deps = subprocess.run(["ldd", lstm_ext.library_path()], capture_output=True, text=True).stdout
    assert "libpython" not in deps and "torch_python" not in deps


@pytest.fixture(scope="module")
def forecaster_file(tmp_path_factory):
    torch.manual_seed(0)
    model = lstm_ext.LSTMModel(1, 8, 3, num_layers=2)
    forecaster = Forecaster(model, scale=0.5, target_scale=2.0, window=12, horizon=3).eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.jit.script(forecaster).save(str(path))
    return forecaster, path


def test_app_equals_python_whole_and_streaming(app, forecaster_file, tmp_path):
    forecaster, path = forecaster_file
    values = 300 + np.cumsum(np.random.default_rng(0).normal(size=12))
    csv = tmp_path / "window.csv"
    np.savetxt(csv, values, header="co2", comments="", fmt="%.10f")
    x = torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1)
    with torch.no_grad():
        expected = forecaster(x).numpy()
    done = run(app, path, csv)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(parse(done.stdout), expected, atol=1e-5, rtol=1e-6)
    streamed = run(app, path, csv, "--stream")
    assert streamed.returncode == 0, streamed.stderr
    rows = parse(streamed.stdout)
    assert rows.shape == (12, 3)
    np.testing.assert_allclose(rows[-1], expected[0], atol=1e-5, rtol=1e-6)
    with torch.no_grad():
        for t in range(1, 12):
            np.testing.assert_allclose(rows[t], forecaster(x[:, :t + 1])[0].numpy(), atol=1e-5,
                                       rtol=1e-6)
    from_stdin = run(app, path, "-", stdin=csv.read_text())
    assert from_stdin.stdout == done.stdout


def test_app_runs_a_plain_lstm_model(app, tmp_path):
    torch.manual_seed(0)
    model = lstm_ext.LSTMModel(3, 6, 2).eval()
    path = tmp_path / "m.pt"
    torch.jit.script(model).save(str(path))
    x = torch.randn(1, 5, 3)
    rows = "\n".join(",".join(f"{v:.9g}" for v in row) for row in x[0].tolist())
    done = run(app, path, "-", stdin=rows)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(parse(done.stdout), model(x).detach().numpy(), atol=1e-5)


def test_app_errors(app, forecaster_file, tmp_path):
    _, path = forecaster_file
    missing = run(app, tmp_path / "nope.pt")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:2000])
    broken = run(app, corrupt, "-", stdin="1\n2\n")
    assert broken.returncode == 2 and "cannot load model" in broken.stderr
    wide = run(app, path, "-", stdin="1,2\n3,4\n")
    assert wide.returncode == 2 and "line 1 has 2 values, but the model takes 1" in wide.stderr
    text = run(app, path, "-", stdin="value\n1\nabc\n")
    assert text.returncode == 2 and "line 3" in text.stderr and "'abc' is not a number" in text.stderr
    empty = run(app, path, "-", stdin="")
    assert empty.returncode == 2 and "no rows" in empty.stderr


def test_app_reports_unregistered_ops(app, tmp_path):
    """A model whose op exists only in the Python process that saved it."""
    lib = torch.library.Library("lstm_ext_test_only", "FRAGMENT")
    lib.define("twice(Tensor x) -> Tensor")
    lib.impl("twice", lambda x: 2 * x, "CPU")

    class UsesForeignOp(torch.nn.Module):
        input_size: int = 1

        def forward(self, x):
            return torch.ops.lstm_ext_test_only.twice(x)

    path = tmp_path / "foreign.pt"
    torch.jit.script(UsesForeignOp()).save(str(path))
    done = run(app, path, "-", stdin="1\n")
    assert done.returncode == 2
    assert "not registered in this program" in done.stderr


def test_app_gradients_without_python_match_eager(app, tmp_path):
    """Backpropagation inside the C++ program (the ops' C++ autograd) gives
    the gradients eager Python computes."""
    torch.manual_seed(0)
    model = lstm_ext.LSTMModel(3, 5, 2, num_layers=2)
    path = tmp_path / "m.pt"
    torch.jit.script(model).save(str(path))
    x = torch.randn(1, 6, 3)
    csv = tmp_path / "x.csv"
    np.savetxt(csv, x[0].numpy(), delimiter=",", fmt="%.9g")
    done = run(app, path, csv, "--gradients")
    assert done.returncode == 0, done.stderr
    got = {line.split(",")[0]: np.array([float(v) for v in line.split(",")[1:]])
           for line in done.stdout.strip().splitlines()}
    model(torch.tensor(np.loadtxt(csv, delimiter=","), dtype=torch.float32)[None]).sum().backward()
    assert set(got) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        np.testing.assert_allclose(got[name], p.grad.numpy().ravel(), atol=1e-5, err_msg=name)
