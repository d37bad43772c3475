"""What the tests share: paths, tolerances, argument makers, the seed
tutorial's cell, and one list of sample inputs per op.

Tolerances: float64 results must match the reference to 1e-10 (both are exact
up to round-off); float32 to atol 2e-5 / rtol 1e-4 (the kernels use a
polynomial exp with ~1e-6 relative error and a different summation order than
the reference's GEMMs).

The sample lists follow extension-cpp's test_extension.py: ``*_samples()``
returns argument lists covering shapes, dtypes, bias or none and lengths, and
the same list drives the op's correctness against ``lstm_ext.reference``, its
gradcheck and ``torch.library.opcheck`` (tests/ops/test_cell_op.py and
test_layer_op.py). Tensors in a sample do not require grad: ``leaf`` gives
copies that do.

Importable as ``helpers`` from any test (pytest puts tests/ on sys.path for
tests/conftest.py) and from a subprocess with ``sys.path.insert(0, TESTS)``.
"""
import os
import struct
import zipfile
from pathlib import Path
from typing import List, NamedTuple, Optional

import pytest
import torch
from torch import nn

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

F64 = dict(atol=1e-10, rtol=1e-10)
F32 = dict(atol=2e-5, rtol=1e-4)


def tol(dtype):
    return F64 if dtype == torch.float64 else F32


def dtype_id(dtype) -> str:
    return "f64" if dtype == torch.float64 else "f32"


def make_cell_args(batch, input_size, hidden, dtype=torch.float64, bias=True, requires_grad=False,
                   seed=0):
    """(x, h, c, w_ih, w_hh, b_ih, b_hh) with values in a range that exercises
    the non-linearities."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        t = torch.randn(*shape, generator=g, dtype=dtype)
        return t.requires_grad_(requires_grad)

    b_ih = r(4 * hidden) if bias else None
    b_hh = r(4 * hidden) if bias else None
    return [r(batch, input_size), r(batch, hidden), r(batch, hidden),
            r(4 * hidden, input_size) * 0.5, r(4 * hidden, hidden) * 0.5, b_ih, b_hh]


def layer_args(steps, batch, input_size, hidden, dtype=torch.float64, bias=True,
               requires_grad=False, seed=0):
    """(x (T, B, I), h, c, w_ih, w_hh, b_ih, b_hh): the cell's arguments over a sequence."""
    cell = make_cell_args(batch, input_size, hidden, dtype=dtype, bias=bias, seed=seed)
    x = torch.randn(steps, batch, input_size, dtype=dtype,
                    generator=torch.Generator().manual_seed(seed + 1))
    args = [x] + cell[1:]
    return [None if a is None else a.requires_grad_(requires_grad) for a in args]


def projected_layer_args(steps, batch, input_size, hidden, proj, dtype=torch.float64, bias=True,
                         seed=0):
    """(x, h (B, P), c (B, H), w_ih, w_hh (4H, P), b_ih, b_hh, w_hr (P, H)): the
    layer's arguments with a projection (proj_size P), w_hr last."""
    args = layer_args(steps, batch, input_size, hidden, dtype=dtype, bias=bias, seed=seed)
    g = torch.Generator().manual_seed(seed + 2)
    args[1] = torch.randn(batch, proj, generator=g, dtype=dtype)
    args[4] = torch.randn(4 * hidden, proj, generator=g, dtype=dtype) * 0.5
    return args + [torch.randn(proj, hidden, generator=g, dtype=dtype) * 0.5]


def leaf(args):
    """Detached copies; floating ones require grad (None stays None)."""
    return [None if a is None else a.detach().clone().requires_grad_(a.is_floating_point())
            for a in args]


def grads(outputs, inputs, weights):
    """Gradients of sum(w_k * out_k) with respect to every input that requires
    grad (None for the others and where unused)."""
    loss = sum((o * w).sum() for o, w in zip(outputs, weights))
    present = [a for a in inputs if a is not None and a.requires_grad]
    got = torch.autograd.grad(loss, present, allow_unused=True)
    it = iter(got)
    return [next(it) if a is not None and a.requires_grad else None for a in inputs]


def assert_matches_reference(fn, reference_fn, args, dtype, **kwargs):
    """The outputs of ``fn(*args, **kwargs)`` and the gradients of a random
    weighting of them with respect to every argument, against ``reference_fn``'s."""
    ours, ref = leaf(args), leaf(args)
    out = fn(*ours, **kwargs)
    expected = reference_fn(*ref, **kwargs)
    for a, b in zip(out, expected):
        torch.testing.assert_close(a, b, **tol(dtype))
    w = [torch.randn_like(t) for t in expected]
    for g, g_ref in zip(grads(out, ours, w), grads(expected, ref, w)):
        if g_ref is None:
            assert g is None
        else:
            torch.testing.assert_close(g, g_ref, **tol(dtype))


class TutorialCell(nn.Module):
    """The seed tutorial's cell, verbatim in structure."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.Wf = nn.Linear(input_size + hidden_size, hidden_size)
        self.Wi = nn.Linear(input_size + hidden_size, hidden_size)
        self.Wc = nn.Linear(input_size + hidden_size, hidden_size)
        self.Wo = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, hidden):
        h_prev, c_prev = hidden
        combined = torch.cat((x, h_prev), 1)
        f_t = torch.sigmoid(self.Wf(combined))
        i_t = torch.sigmoid(self.Wi(combined))
        c_hat_t = torch.tanh(self.Wc(combined))
        c_t = f_t * c_prev + i_t * c_hat_t
        o_t = torch.sigmoid(self.Wo(combined))
        h_t = o_t * torch.tanh(c_t)
        return h_t, c_t


# -- sample inputs, one list per op -------------------------------------------------------


FULL_GRADCHECK = 1000  # input elements; gradcheck runs larger samples in fast mode


class Sample(NamedTuple):
    id: str          # the pytest id: shape, bias, lengths, dtype
    args: list       # the op's arguments, in schema order

    @property
    def dtype(self):
        return self.args[0].dtype

    @property
    def fast_gradcheck(self) -> bool:
        """Whether gradcheck should run in fast mode (full mode takes minutes
        for the larger samples)."""
        return sum(a.numel() for a in self.args if isinstance(a, torch.Tensor)) > FULL_GRADCHECK


def params(samples: List[Sample], dtype=None) -> list:
    """``samples`` (those of ``dtype`` only, if given) for pytest.mark.parametrize."""
    return [pytest.param(s, id=s.id) for s in samples if dtype is None or s.dtype == dtype]


DTYPES = (torch.float64, torch.float32)
# (batch, input_size, hidden): one row (the GEMV path) to register blocks with
# remainders and hidden sizes beyond a vector width.
CELL_SHAPES = [(1, 4, 3), (3, 4, 5), (7, 5, 16), (33, 20, 37), (64, 48, 129)]


def cell_samples() -> List[Sample]:
    """``lstm_cell_forward`` (and ``lstm_ext.lstm_cell``): input, hx, cx, w_ih,
    w_hh, b_ih, b_hh; every shape of CELL_SHAPES with and without bias, float64
    and float32."""
    return [Sample(f"b{b}-i{i}-h{h}-{'bias' if bias else 'nobias'}-{dtype_id(dtype)}",
                   make_cell_args(b, i, h, dtype=dtype, bias=bias))
            for dtype in DTYPES for b, i, h in CELL_SHAPES for bias in (True, False)]


def cell_backward_samples() -> List[Sample]:
    """``lstm_cell_backward``: grad_hy, grad_cy, input, hx, cx, w_ih, w_hh,
    gates, cy, output_mask; from the forward samples with bias, with either
    output's gradient undefined and every gradient or some of them asked for."""
    out = []
    for k, s in enumerate(x for x in cell_samples() if x.args[5] is not None):
        plain = s.args[:5]
        with torch.no_grad():
            hy, cy, gates = torch.ops.lstm_ext.lstm_cell_forward(*s.args)
        grad_hy = torch.randn_like(hy) if k % 3 != 2 else None
        grad_cy = torch.randn_like(cy) if k % 3 != 0 else None
        mask = [True] * 6 if k % 2 == 0 else [False, True, False, True, False, True]
        out.append(Sample(f"{s.id}-mask{''.join(str(int(m)) for m in mask)}",
                          [grad_hy, grad_cy, *plain, gates, cy, mask]))
    return out


def _layer_sample(name: str, steps, batch, input_size, hidden, dtype, bias=True,
                  lengths: Optional[List[int]] = None, proj: int = 0) -> Sample:
    lens = None if lengths is None else torch.tensor(lengths)
    shown = "all" if lengths is None else "-".join(map(str, lengths))
    if proj:
        args = projected_layer_args(steps, batch, input_size, hidden, proj, dtype=dtype,
                                    bias=bias)
        args = args[:7] + [lens, args[7]]
    else:
        args = layer_args(steps, batch, input_size, hidden, dtype=dtype, bias=bias) + [lens, None]
    return Sample(f"{name}-t{steps}-b{batch}-i{input_size}-h{hidden}-"
                  f"{f'p{proj}-' if proj else ''}"
                  f"{'bias' if bias else 'nobias'}-len{shown}-{dtype_id(dtype)}", args)


def layer_samples() -> List[Sample]:
    """``lstm_layer_forward`` (and ``lstm_ext.lstm_layer``): input, hx, cx, w_ih,
    w_hh, b_ih, b_hh, lengths, w_hr; float64 and float32 each:

    - "small": 4 steps of 3 rows, all running or ending early;
    - "grid": 6 steps of 4 rows, with and without bias, all rows running or
      ending early (down to one step);
    - "blocked": shapes that exercise the step kernels' full and partial
      blocks, rows in groups plus a remainder, hidden units in whole vectors
      plus a tail, rows ending at every step;
    - "univariate": input size 1; "input8" and "input9": the largest input
      size whose projection the step kernels make themselves (at most 8, in
      inference and training) and the smallest left to the whole-sequence GEMM;
    - "proj": with a projection w_hr (proj_size), small and blocked shapes,
      with and without bias and lengths, one row included.
    """
    out = []
    for dtype in DTYPES:
        for lengths in (None, [4, 3, 1], [4, 2, 2]):
            out.append(_layer_sample("small", 4, 3, 2, 3, dtype, lengths=lengths))
        for bias in (True, False):
            for lengths in (None, [6, 6, 4, 1], [3, 2, 2, 1]):
                out.append(_layer_sample("grid", 6, 4, 5, 7, dtype, bias, lengths))
        # (10, 70): dh = dgates @ W_hh on packed panels, K = 280 in two chunks.
        for batch, hidden in ((9, 40), (16, 64), (5, 17), (10, 70)):
            lengths = sorted([5, 5, 4, 2, 1] + [3] * (batch - 5), reverse=True)
            out.append(_layer_sample("blocked", 5, batch, 3, hidden, dtype, lengths=lengths))
        out.append(_layer_sample("blocked-input12", 5, 9, 12, 40, dtype,
                                 lengths=[5, 5, 4, 3, 3, 3, 3, 2, 1]))
        # Input sizes up to 8 have their projection made by the step kernels,
        # larger ones by one GEMM for the sequence.
        for lengths in (None, [7, 7, 6, 4, 2, 1]):
            out.append(_layer_sample("univariate", 7, 6, 1, 20, dtype, lengths=lengths))
            for inputs in (8, 9):
                out.append(_layer_sample(f"input{inputs}", 7, 6, inputs, 20, dtype,
                                         lengths=lengths))
        for bias, lengths in ((True, None), (False, [5, 3, 3, 1]), (True, [5, 5, 2, 1])):
            out.append(_layer_sample("proj", 5, 4, 3, 6, dtype, bias, lengths, proj=2))
        out.append(_layer_sample("proj", 3, 1, 2, 5, dtype, proj=4))
        out.append(_layer_sample("proj-blocked", 4, 9, 3, 40, dtype,
                                 lengths=[4, 4, 4, 3, 3, 2, 2, 1, 1], proj=17))
    return out


def layer_backward_samples() -> List[Sample]:
    """``lstm_layer_backward``: grad_output, grad_hy, grad_cy, input, hx, cx,
    w_ih, w_hh, output, gates, cs, lengths, w_hr, output_mask; from the forward
    samples with bias, with some output gradients undefined and every gradient
    or some of them asked for."""
    out = []
    for k, s in enumerate(x for x in layer_samples() if x.args[5] is not None):
        plain, lengths, w_hr = s.args[:5], s.args[7], s.args[8]
        with torch.no_grad():
            output, hy, cy, gates, cs = torch.ops.lstm_ext.lstm_layer_forward(*s.args)
        grad_output = torch.randn_like(output) if k % 3 != 1 else None
        grad_hy = torch.randn_like(hy) if k % 3 != 0 else None
        grad_cy = torch.randn_like(cy) if k % 3 != 2 else None
        mask = [True, True, False, True, True, False, False] if k % 2 == 0 else [True] * 7
        out.append(Sample(f"{s.id}-mask{''.join(str(int(m)) for m in mask)}",
                          [grad_output, grad_hy, grad_cy, *plain, output, gates, cs, lengths,
                           w_hr, mask]))
    return out


def gemm_samples() -> List[Sample]:
    """``gemm(a, b)``: (m, k) @ (k, n) from 1 x 1 to sizes beyond a block, with
    an empty inner dimension (k = 0) and empty outputs; float64 and float32."""
    g = torch.Generator().manual_seed(0)
    return [Sample(f"m{m}-k{k}-n{n}-{dtype_id(dtype)}",
                   [torch.randn(m, k, generator=g, dtype=dtype),
                    torch.randn(k, n, generator=g, dtype=dtype)])
            for dtype in DTYPES
            for m, k, n in ((1, 1, 1), (5, 7, 3), (64, 33, 17), (3, 300, 5), (250, 0, 4),
                            (0, 3, 2))]


def lstm_ext_ops_called(fn) -> List[str]:
    """Names of the lstm_ext ops that ``fn()`` runs, in order (eager or
    scripted code alike: both reach the dispatcher)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    called = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "lstm_ext":
                called.append(func._opname)
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    return called


def damaged(source, how):
    """A writer of `source` (a zip archive written by torch: a checkpoint, a
    TorchScript model, a .pt2 package) to a given path, cut to half its length
    (how="cut"), with one bit flipped (how="flip") in its largest tensor's
    bytes (entries under data/, stored uncompressed; torch loads them without
    their checksums), or (how="code", a TorchScript model) with the CRC-32
    recorded for its largest code entry (deflated) changed in the local header
    and the central directory alike: the code inflates and loads, but its
    bytes are not the ones the checksum was made of; or (how="deflate") with
    that entry's deflated stream broken (its first block of a reserved type)."""
    def write(path):
        data = bytearray(source.read_bytes())
        if how == "cut":
            data = data[:len(data) // 2]
        else:
            with zipfile.ZipFile(source) as archive:
                if how == "flip":  # the largest stored entry, a tensor's bytes first
                    entry = max((i for i in archive.infolist() if i.compress_type == 0),
                                key=lambda i: ("/data/" in i.filename, i.file_size))
                else:
                    entry = max((i for i in archive.infolist() if i.compress_type != 0),
                                key=lambda i: i.file_size)
                central = archive.start_dir
            name_len, extra_len = struct.unpack("<HH", data[entry.header_offset + 26:
                                                            entry.header_offset + 30])
            start = entry.header_offset + 30 + name_len + extra_len  # the entry's bytes
            if how == "flip":
                data[start + 7] ^= 0x40
            elif how == "deflate":
                data[start] = 0xFF
            else:  # "code": its CRC-32 in the local header and the central directory
                while struct.unpack("<I", data[central + 42:central + 46])[0] != \
                        entry.header_offset:
                    central += 46 + sum(struct.unpack("<HHH", data[central + 28:central + 34]))
                    assert central + 46 <= len(data), "no central directory record for the entry"
                for crc_at in (entry.header_offset + 14, central + 16):
                    data[crc_at] ^= 0x01
        Path(path).write_bytes(bytes(data))
    return write


# The C++ application (examples/cpp) -----------------------------------------

CPP_APP_BUILD = os.path.join(ROOT, "examples", "cpp", "build", "with-package-library")


def cmake_build(source: str, build: str, *options: str) -> str:
    """Configures the CMake project `source` into `build` with `options` on
    every call (seconds: a cached option such as LSTM_EXT_OPS_LIBRARY is never
    left from before; a cached build's generator stands), then builds it
    incrementally; returns the configure step's output. Skips where cmake is
    missing."""
    import shutil
    import subprocess

    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    if os.path.exists(os.path.join(build, "CMakeCache.txt")):
        generator = []
    configured = subprocess.run(["cmake", "-S", source, "-B", build, *generator, *options],
                                capture_output=True, text=True, timeout=300)
    assert configured.returncode == 0, configured.stdout + configured.stderr
    done = subprocess.run(["cmake", "--build", build, "-j2"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return configured.stdout


def build_cpp_app(build: str = CPP_APP_BUILD, package_library: bool = True) -> str:
    """Builds examples/cpp into ``build`` (cmake_build) and returns the path of
    its application, lstm_ext_predict.

    package_library: next to the application goes a copy of the op library this
    package loaded (lstm_ext.library_path()), and only predict.cpp compiles;
    False compiles csrc/ with CMake as make cpp does (a slow test): in a fresh
    clone that second compile of the op library took 91 s of the default suite
    (7:15 in all, --durations)."""
    import lstm_ext

    library = lstm_ext.library_path() if package_library else ""
    cmake_build(os.path.join(ROOT, "examples", "cpp"), build, "-DCMAKE_BUILD_TYPE=Release",
                f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
                f"-DLSTM_EXT_OPS_LIBRARY={library}")
    return os.path.join(build, "lstm_ext_predict")


def run_app(app: str, *args, stdin: Optional[str] = None):
    """The C++ application run with `args` (and `stdin`), its output captured."""
    import subprocess

    return subprocess.run([app, *map(str, args)], capture_output=True, text=True, input=stdin,
                          timeout=120)


def parse_rows(stdout: str):
    """The application's rows of comma-separated numbers, as an array."""
    import numpy as np

    return np.array([[float(v) for v in line.split(",")] for line in stdout.strip().splitlines()])


def one_line_error(done) -> str:
    """Bad input: exit status 2 and exactly one line on stderr, nothing on stdout."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr.strip()
