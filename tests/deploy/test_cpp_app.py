"""The C++ application, built with CMake against the installed torch: it loads a
scripted model without Python and prints what Python computes (1e-5).

(Over 300 lines: one program's behaviour case by case, sharing its build, the
scripted models it runs and the helpers that run it; split, each part would
repeat those.)"""
import zipfile
from typing import Optional, Tuple

import numpy as np
import pytest
import torch

import lstm_ext
from helpers import build_cpp_app, damaged, one_line_error, parse_rows, run_app
from lstm_ext.forecast.forecaster import Forecaster


@pytest.fixture(scope="module")
def app():
    """Next to a copy of the package's op library (helpers.build_cpp_app;
    test_cpp_build.py builds the one make cpp compiles)."""
    return build_cpp_app()


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
    done = run_app(app, path, csv)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(parse_rows(done.stdout), expected, atol=1e-5, rtol=1e-6)
    streamed = run_app(app, path, csv, "--stream")
    assert streamed.returncode == 0, streamed.stderr
    rows = parse_rows(streamed.stdout)
    assert rows.shape == (12, 3)
    np.testing.assert_allclose(rows[-1], expected[0], atol=1e-5, rtol=1e-6)
    with torch.no_grad():
        for t in range(1, 12):
            np.testing.assert_allclose(rows[t], forecaster(x[:, :t + 1])[0].numpy(), atol=1e-5,
                                       rtol=1e-6)
    from_stdin = run_app(app, path, "-", stdin=csv.read_text())
    assert from_stdin.stdout == done.stdout


def test_app_runs_a_plain_lstm_model(app, tmp_path):
    torch.manual_seed(0)
    model = lstm_ext.LSTMModel(3, 6, 2).eval()
    path = tmp_path / "m.pt"
    torch.jit.script(model).save(str(path))
    x = torch.randn(1, 5, 3)
    rows = "\n".join(",".join(f"{v:.9g}" for v in row) for row in x[0].tolist())
    done = run_app(app, path, "-", stdin=rows)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(parse_rows(done.stdout), model(x).detach().numpy(), atol=1e-5)


def test_app_errors(app, forecaster_file, tmp_path):
    _, path = forecaster_file
    missing = run_app(app, tmp_path / "nope.pt")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:2000])
    broken = run_app(app, corrupt, "-", stdin="1\n2\n")
    assert broken.returncode == 2 and "cannot load model" in broken.stderr
    wide = run_app(app, path, "-", stdin="1,2\n3,4\n")
    assert wide.returncode == 2 and "line 1 has 2 values, but the model takes 1" in wide.stderr
    text = run_app(app, path, "-", stdin="value\n1\nabc\n")
    assert text.returncode == 2 and "line 3" in text.stderr
    assert "'abc' is not a number" in text.stderr
    empty = run_app(app, path, "-", stdin="")
    assert empty.returncode == 2 and "no rows" in empty.stderr


@pytest.mark.parametrize("how, message", [
    # libtorch reads a zip without its checksums: this ran with another weight, exit 0
    ("flip", "/data/"),
    ("cut", "a zip archive cut short or damaged"),   # was miniz's five sentences
    # TorchScript's code is deflated: its checksum, too, is checked (was exit 0)
    ("code", "/code/"),
    # a broken stream: libtorch's reader gives bytes that fail the checksum
    ("deflate", "/code/"),
])
def test_app_refuses_a_damaged_model_file(app, forecaster_file, tmp_path, how, message):
    _, path = forecaster_file
    damaged(path, how)(tmp_path / "model.pt")
    error = one_line_error(run_app(app, tmp_path / "model.pt", "-", stdin="1\n2\n"))
    assert message in error and "cannot load model" in error, error
    if how != "cut":
        assert "a damaged zip archive (entry '" in error and "': Bad CRC-32)" in error, error


def test_app_checks_a_zip64_archive(app, tmp_path):
    """65,536 entries make a zip64 archive (its end record in the zip64 form):
    the one stored entry with a flipped bit is still found and named."""
    path = tmp_path / "many.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for i in range(65536):
            archive.writestr(f"many/e{i}", b"")
        archive.writestr("many/data/0", bytes(range(256)) * 16)
    damaged(path, "flip")(path)
    assert b"PK\x06\x06" in path.read_bytes()[-200:]  # the zip64 end record
    error = one_line_error(run_app(app, path, "-", stdin="1\n2\n"))
    assert "entry 'many/data/0': Bad CRC-32" in error, error


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
    done = run_app(app, path, "-", stdin="1\n")
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
    done = run_app(app, path, csv, "--gradients")
    assert done.returncode == 0, done.stderr
    got = {line.split(",")[0]: np.array([float(v) for v in line.split(",")[1:]])
           for line in done.stdout.strip().splitlines()}
    model(torch.tensor(np.loadtxt(csv, delimiter=","), dtype=torch.float32)[None]).sum().backward()
    assert set(got) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        np.testing.assert_allclose(got[name], p.grad.numpy().ravel(), atol=1e-5, err_msg=name)


@pytest.mark.parametrize("body, message", [
    ("1\nnan\n3\n", "'nan' is not a finite number"),
    ("1\n-inf\n3\n", "'-inf' is not a finite number"),
    ("1\nInfinity\n3\n", "'Infinity' is not a finite number"),
    ("1\n1e400\n3\n", "'1e400' is not a finite number"),
    ("1\n1e39\n3\n", "1e39 is beyond the float32 range"),
    ("1\n-1e39\n3\n", "-1e39 is beyond the float32 range"),
    ("1\n2,\n3\n", "column 2: empty field"),
    ("1\n,2\n3\n", "column 1: empty field"),
    ("1\n  \t,\n3\n", "column 1: empty field"),
    ("1\n2x\n3\n", "'2x' is not a number"),
    ("1\n2 3\n3\n", "'2 3' is not a number"),
    ("1\n0x\n3\n", "'0x' is not a number"),
])
def test_app_refuses_non_finite_and_malformed_values(app, forecaster_file, tmp_path, body,
                                                     message):
    """Each names the input and the line; none is read as a header or skipped."""
    _, path = forecaster_file
    error = one_line_error(run_app(app, path, "-", stdin=body))
    assert "standard input line 2" in error and message in error, error
    csv = tmp_path / "in.csv"
    csv.write_text("value\n" + body)  # a header first: the bad line is now line 3
    error = one_line_error(run_app(app, path, csv, "--stream"))
    assert f"{csv} line 3" in error and message in error, error


def test_app_refuses_a_nan_window_instead_of_forecasting(app, forecaster_file):
    _, path = forecaster_file
    error = one_line_error(run_app(app, path, "-", stdin="nan\n" * 12))
    assert "standard input line 1" in error and "not a finite number" in error


@pytest.mark.parametrize("body, message", [
    ("2x\n3\n4\n", "'2x' is not a number"),
    ("1,\n2\n3\n", "column 2: empty field"),
    ("inf\n2\n3\n", "'inf' is not a finite number"),
])
def test_app_first_line_is_a_header_only_if_it_is_text(app, forecaster_file, body, message):
    """A malformed number on line 1 is an error, not a header to skip."""
    _, path = forecaster_file
    error = one_line_error(run_app(app, path, "-", stdin=body))
    assert "standard input line 1" in error and message in error, error


def test_app_reads_float64_models_range_and_plain_numbers(app, forecaster_file, tmp_path):
    """The range check follows the model's dtype; signs, exponents, blanks
    around values and CRLF line ends are accepted."""
    torch.manual_seed(0)
    model = lstm_ext.LSTMModel(2, 4, 1).double().eval()
    path = tmp_path / "m64.pt"
    torch.jit.script(model).save(str(path))
    done = run_app(app, path, "-", stdin="a,b\r\n1e39, -2\r\n\r\n +0.5 ,3E-2\r\n")
    assert done.returncode == 0, done.stderr
    x = torch.tensor([[[1e39, -2.0], [0.5, 3e-2]]], dtype=torch.float64)
    assert np.isfinite(parse_rows(done.stdout)).all()
    np.testing.assert_allclose(parse_rows(done.stdout), model(x).detach().numpy(), atol=1e-12)
    _, path = forecaster_file
    error = one_line_error(run_app(app, path, "-", stdin="nanoseconds\n1\n2\n3,4\n"))
    assert "line 4 has 2 values, but the model takes 1" in error  # the header was skipped
    commented = run_app(app, path, "-", stdin="# co2\n1\n2\n")  # numpy.savetxt's header
    assert commented.returncode == 0, commented.stderr


def test_app_one_row_is_too_short_for_a_forecaster(app, forecaster_file):
    forecaster, path = forecaster_file
    error = one_line_error(run_app(app, path, "-", stdin="value\n5\n"))
    assert "standard input" in error and "too short" in error and "at least 2" in error, error
    assert "Traceback" not in error
    error = one_line_error(run_app(app, path, "-", stdin="5\n"))
    assert "too short" in error
    # Streaming one value is well defined: the forecast is the value itself.
    streamed = run_app(app, path, "-", "--stream", stdin="5\n")
    assert streamed.returncode == 0, streamed.stderr
    np.testing.assert_array_equal(parse_rows(streamed.stdout), [[5.0] * forecaster.horizon])


class _OneInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.input_size = 1


class _RaisesInForward(_OneInput):
    def forward(self, x):
        if x.shape[1] > 0:
            raise ValueError("this model always fails")
        return x


class _BadShapes(_OneInput):
    def forward(self, x):
        return torch.mm(x[0], torch.ones(5, 5))


@pytest.mark.parametrize("module, args, message", [
    (_RaisesInForward, (), "forward failed: ValueError: this model always fails"),
    (_BadShapes, (), "forward failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
    (_BadShapes, ("--gradients",), "forward failed: RuntimeError: mat1 and mat2 shapes"),
    (_BadShapes, ("--stream",), "has no step(x, state) method"),
])
def test_app_reports_a_failing_model_in_one_line(app, tmp_path, module, args, message):
    path = tmp_path / "bad.pt"
    torch.jit.script(module()).save(str(path))
    error = one_line_error(run_app(app, path, "-", *args, stdin="1\n2\n3\n"))
    assert error.startswith(f"lstm_ext_predict: {path}: ") and message in error, error
    assert "Traceback" not in error and "HERE" not in error


def test_app_reports_a_failing_step_in_one_line(app, tmp_path):
    class StepFails(_OneInput):
        def forward(self, x):
            return x[:, -1]

        @torch.jit.export
        def step(self, x, state: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
            if state is not None:
                raise RuntimeError("no second step")
            return x, x

    path = tmp_path / "step.pt"
    torch.jit.script(StepFails()).save(str(path))
    error = one_line_error(run_app(app, path, "-", "--stream", stdin="1\n2\n3\n"))
    assert "step at standard input line 2 failed" in error, error
    assert "RuntimeError: no second step" in error, error


def test_app_usage_errors_are_one_line(app, forecaster_file):
    _, path = forecaster_file
    for args, message in [((), "usage: lstm_ext_predict MODEL.pt"),
                          ((path, "-", "--bogus"), "unknown option '--bogus'"),
                          ((path, "-", "--latency"), "add --stream"),
                          ((path, "-", "--threads"), "--threads needs a value"),
                          ((path, "-", "--threads", "0"), "got '0'"),
                          ((path, "-", "--threads", "-3"), "got '-3'"),
                          ((path, "-", "--threads", "2.5"), "got '2.5'"),
                          ((path, "-", "--threads", "four"), "got 'four'"),
                          ((path, "-", "--threads=99999"), "got '99999'"),
                          ((path, "-", "--threads", "2", "--gradients"), "--gradients")]:
        error = one_line_error(run_app(app, *args, stdin="1\n2\n"))
        assert message in error, (args, error)
        if "--threads" in " ".join(map(str, args)) and "gradients" not in message:
            assert "an integer from 1 to" in error, error
    usage = run_app(app, "--help")
    assert usage.returncode == 0 and "--threads N" in usage.stdout


@pytest.mark.parametrize("stream", [False, True])
def test_app_threads_give_the_serial_result_bitwise(app, forecaster_file, tmp_path, stream):
    """--threads N: the loaded model run from N threads at once, each repeating
    the whole-window prediction (and with --stream the streaming one) must
    reproduce the serial result bit for bit; what it prints is the serial run's."""
    _, forecaster_path = forecaster_file
    torch.manual_seed(1)
    big = lstm_ext.LSTMModel(3, 96, 2, num_layers=2).eval()
    big_path = tmp_path / "big.pt"
    torch.jit.script(big).save(str(big_path))
    rng = np.random.default_rng(1)
    cases = [(forecaster_path, 300 + np.cumsum(rng.normal(size=(12, 1)), axis=0)),
             (big_path, rng.normal(size=(40, 3)))]
    for path, values in cases:
        csv = tmp_path / "in.csv"
        np.savetxt(csv, values, delimiter=",", fmt="%.10f")
        extra = ["--stream"] if stream else []
        serial = run_app(app, path, csv, *extra)
        assert serial.returncode == 0, serial.stderr
        threaded = run_app(app, path, csv, *extra, "--threads", 4)
        assert threaded.returncode == 0, threaded.stderr
        assert threaded.stdout == serial.stdout
        assert "4 threads" in threaded.stderr and "bitwise equal" in threaded.stderr, \
            threaded.stderr
        assert ("streaming" in threaded.stderr) == stream


class _RandomForward(_OneInput):
    def forward(self, x):
        return x[:, -1] + torch.rand(1)


class _RandomStep(_OneInput):
    def forward(self, x):
        return x[:, -1]

    @torch.jit.export
    def step(self, x, state: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return x + torch.rand(1), x


@pytest.mark.parametrize("module, args, message", [
    (_RandomForward, (), "the whole-window forecast differs from the serial run's"),
    (_RandomStep, ("--stream",), "the streaming forecast at standard input line 2 differs"),
])
def test_app_threads_report_a_difference(app, tmp_path, module, args, message):
    """The check itself: a model that is not reproducible fails it, exit status 1."""
    path = tmp_path / "random.pt"
    torch.jit.script(module()).save(str(path))
    done = run_app(app, path, "-", *args, "--threads", 3, stdin="value\n1\n2\n")
    assert done.returncode == 1 and done.stdout == "", (done.returncode, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "threads disagree with the serial run" in done.stderr and message in done.stderr, \
        done.stderr
