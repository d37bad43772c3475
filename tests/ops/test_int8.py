"""lstm_layer_forward_int8: the int8 inference layer op (numerics in
csrc/cpu/vec/int8_kernels.h and lstm_ext/quantization.py).

Two kinds of check:
  * exact: against a float64 reference from the same int8 weights and the
    same per-row activation quantization (float32 arithmetic for the scales
    and the rounding, as the kernels do them). To keep a rounding decision
    from flipping between the two (h_{t-1} differing in its last bit moves a
    quantized value by one step), the reference quantizes the kernel's own
    h_{t-1} (its output at t - 1) at each step; its c is its own. What is
    left is float32 round-off: 1e-5.
  * the bound: one step against the float32 layer op on the original weights,
    within the worst-case bound derived in lstm_ext/quantization.py.
Then every kernel build (AMX, AVX512-VNNI, the AVX-512/AVX2/default
fallbacks) in subprocesses, lengths, empty sizes, NaN/inf against torch.nn,
the argument errors, and the refusal of gradients.
"""
import os
import subprocess
import sys
import tempfile

import pytest
import torch
from torch import nn

import lstm_ext
from helpers import ROOT
from lstm_ext.nn.quantized import quantize_weight

op = torch.ops.lstm_ext.lstm_layer_forward_int8
TIGHT = dict(atol=1e-5, rtol=1e-5)


def quantize_rows(a):
    """The kernels' per-row quantization, in float32: (q as float64, scale)."""
    a = a.float()
    amax = a.abs().amax(-1, keepdim=True) if a.shape[-1] else a.new_zeros(a.shape[:-1] + (1,))
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(a * inv).clamp(-127, 127)
    return q.double(), (amax / 127.0).double()


def reference(x, h0, c0, w_ih, s_ih, w_hh, s_hh, bias, lengths, out_kernel):
    """(output, c_n) in float64 (see the module docstring)."""
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[1]
    lens = lengths.tolist() if lengths is not None else [T] * B
    qx, sx = quantize_rows(x)
    px = (qx @ w_ih.double().t()) * sx * s_ih.double()
    if bias is not None:
        px = px + bias.double()
    c = c0.double().clone()
    out = torch.zeros(T, B, H, dtype=torch.float64)
    for t in range(T):
        n = sum(1 for ln in lens if ln > t)
        if n == 0:
            continue
        h_prev = h0[:n] if t == 0 else out_kernel[t - 1, :n]
        qh, sh = quantize_rows(h_prev)
        pre = px[t, :n] + (qh @ w_hh.double().t()) * sh * s_hh.double()
        i, f, g, o = pre.chunk(4, 1)
        c[:n] = torch.sigmoid(f) * c[:n] + torch.sigmoid(i) * torch.tanh(g)
        out[t, :n] = torch.sigmoid(o) * torch.tanh(c[:n])
    return out, c


def make_args(T, B, I, H, bias=True, seed=0, weight_scale=1.0):
    """Float32 (x, h0, c0, w_ih, w_hh, b_ih, b_hh) and the int8 op's arguments."""
    g = torch.Generator().manual_seed(seed)
    k = weight_scale / H ** 0.5
    w_ih = (torch.rand(4 * H, I, generator=g) * 2 - 1) * k
    w_hh = (torch.rand(4 * H, H, generator=g) * 2 - 1) * k
    b_ih, b_hh = torch.randn(4 * H, generator=g) * 0.5, torch.randn(4 * H, generator=g) * 0.5
    x = torch.randn(T, B, I, generator=g)
    h0, c0 = torch.randn(B, H, generator=g) * 0.5, torch.randn(B, H, generator=g)
    q_ih, s_ih = quantize_weight(w_ih)
    q_hh, s_hh = quantize_weight(w_hh)
    fused = (b_ih + b_hh) if bias else None
    floats = (x, h0, c0, w_ih, w_hh, b_ih if bias else None, b_hh if bias else None)
    return floats, [x, h0, c0, q_ih, s_ih, q_hh, s_hh, fused]


def check_exact(args, lengths=None):
    out, hy, cy = op(*args, lengths)
    ref_out, ref_c = reference(*args, lengths, out)
    torch.testing.assert_close(out.double(), ref_out, **TIGHT)
    torch.testing.assert_close(cy.double(), ref_c, **TIGHT)
    T, B = out.shape[0], out.shape[1]
    lens = lengths.tolist() if lengths is not None else [T] * B
    for b in range(B):  # hy: each row's h at its own last step
        assert torch.equal(hy[b], out[lens[b] - 1, b] if T > 0 else args[1][b])
    assert out.dtype == hy.dtype == cy.dtype == torch.float32
    return out, hy, cy


# (T, B, I, H): H not a multiple of 16 and I not of 4 (padding), 16+ rows
# (AMX tiles), 1-3 rows (VNNI within the AMX build), K over 64 (several tiles).
SHAPES = [(5, 7, 40, 37), (3, 20, 64, 32), (4, 3, 5, 16), (2, 1, 130, 70), (6, 33, 17, 9)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_matches_reference(shape, bias):
    _, args = make_args(*shape, bias=bias)
    check_exact(args)


def test_lengths():
    _, args = make_args(6, 9, 13, 20, seed=1)
    lengths = torch.tensor([6, 6, 5, 5, 4, 3, 2, 2, 1])
    out, _, _ = check_exact(args, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(out[n:, b] == 0)


def test_large_weights_and_zero_rows():
    """Pre-activations of tens (saturated gates), an all-zero input row (its
    scale is 0) and an all-zero weight row."""
    _, args = make_args(4, 18, 24, 16, seed=2, weight_scale=20.0)
    args[0][1, 3] = 0
    args[3][5] = 0
    check_exact(args)


def test_extreme_products_are_exact():
    """Every activation at its row's largest magnitude (q = +-127, u = 255 or 1)
    and every weight at +-127: the pairs a u8 x s8 product into int16 would
    clip (2 * 255 * 127 > 32767; the AVX2 build's vpmaddubsw, int8_math.h).
    Scales keep the pre-activations near one, so a clipped sum shows."""
    T, B, I, H = 3, 6, 72, 16
    g = torch.Generator().manual_seed(3)

    def signs(*shape, p=0.5):
        return torch.where(torch.rand(*shape, generator=g) < p, 1.0, -1.0)

    x = signs(T, B, I) * 2.0
    h0 = signs(B, H) * 0.5
    c0 = torch.randn(B, H, generator=g)
    q_ih = (signs(4 * H, I, p=0.8) * 127).to(torch.int8)
    q_hh = (signs(4 * H, H, p=0.8) * 127).to(torch.int8)
    s_ih = torch.full((4 * H,), 1.0 / (2 * I * 127))
    s_hh = torch.full((4 * H,), 1.0 / (2 * H * 127))
    out, _, _ = check_exact([x, h0, c0, q_ih, s_ih, q_hh, s_hh, None])
    assert out.abs().max() > 0.05  # the gates are not saturated: the sums matter


@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (3, 0, 4, 5), (3, 2, 0, 5)],
                         ids=["no_steps", "no_batch", "no_input"])
def test_empty_sizes(shape):
    _, args = make_args(*shape)
    out, hy, cy = op(*args, None)
    assert out.shape == (shape[0], shape[1], shape[3])
    if shape[0] == 0:
        assert torch.equal(hy, args[1]) and torch.equal(cy, args[2])
    else:
        check_exact(args)


def test_within_the_stated_bound_of_float32():
    """One step from the same state against the float32 layer op on the
    original weights: |Δc|, |Δh| within the worst-case bound of
    lstm_ext/quantization.py (and well inside it, as roundings cancel)."""
    floats, args = make_args(1, 24, 48, 40, seed=3)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = floats
    out, _, cy = op(*args, None)
    want, _, want_c = lstm_ext.lstm_layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh)

    def worst(a, w):  # (rows, 4H): (||a||_1 + K max|a|) max|W_j| / 254
        K = a.shape[1]
        return (a.abs().sum(1, keepdim=True) + K * a.abs().amax(1, keepdim=True)) \
            * w.abs().amax(1) / 254

    e = worst(x[0], w_ih) + worst(h0, w_hh)
    e_i, e_f, e_g, e_o = e.chunk(4, 1)
    bound_c = c0.abs() * e_f / 4 + e_i / 4 + e_g
    bound_h = e_o / 4 + bound_c
    err_c, err_h = (cy - want_c).abs(), (out[0] - want[0]).abs()
    assert torch.all(err_c <= bound_c + 1e-6)
    assert torch.all(err_h <= bound_h + 1e-6)
    assert err_h.max() < 0.1 * bound_h.max()  # typical errors: sqrt(K) smaller


# -- NaN and inf ---------------------------------------------------------------------------


def torch_lstm(floats_dq, x, h0, c0):
    """torch.nn.LSTM on the dequantized weights (float32)."""
    w_ih, s_ih, w_hh, s_hh, bias = floats_dq
    H = w_hh.shape[1]
    m = nn.LSTM(x.shape[2], H)
    with torch.no_grad():
        m.weight_ih_l0.copy_(w_ih.float() * s_ih[:, None])
        m.weight_hh_l0.copy_(w_hh.float() * s_hh[:, None])
        m.bias_ih_l0.copy_(bias)
        m.bias_hh_l0.zero_()
        out, (h, c) = m(x, (h0[None], c0[None]))
    return out, h[0], c[0]


@pytest.mark.parametrize("where", ["x_nan", "x_inf", "x_neg_inf", "h0_nan", "h0_inf", "c0_nan",
                                   "c0_inf"])
def test_nan_inf_like_torch(where):
    """Non-finite values reach the outputs where torch.nn.LSTM's do: a row
    with NaN or inf is summed in float32, never quantized to zeros."""
    _, args = make_args(5, 20, 16, 24, seed=4)
    x, h0, c0 = args[0].clone(), args[1].clone(), args[2].clone()
    value = {"nan": float("nan"), "inf": float("inf")}[where.split("_")[-1]]
    if where.startswith("x_neg"):
        value = -value
    target = {"x": x[2, 3], "h0": h0[5], "c0": c0[7]}[where.split("_")[0]]
    target[1] = value
    out, hy, cy = op(x, h0, c0, *args[3:], None)
    want, want_h, want_c = torch_lstm(args[3:], x, h0, c0)
    for got, exp in ((out, want), (hy, want_h), (cy, want_c)):
        assert torch.equal(got.isnan(), exp.isnan()), where
        assert torch.equal(got.isinf(), exp.isinf()), where
        finite = exp.isfinite()
        torch.testing.assert_close(got[finite], exp[finite], atol=0.05, rtol=0)
    # Not vacuous: NaN spreads, inf in c stays; an inf in x saturates gates
    # (finite h, compared above: a row quantized to zeros would not match).
    assert not all(t.isfinite().all() for t in (out, hy, cy)) or where.startswith("x_") and \
        "inf" in where


# -- every build ---------------------------------------------------------------------------


@pytest.mark.parametrize("env", [{"LSTM_EXT_INT8_AMX": "0"}, {"ATEN_CPU_CAPABILITY": "avx512",
                                                              "LSTM_EXT_INT8_AMX": "0"},
                                 {"ATEN_CPU_CAPABILITY": "avx2"},
                                 {"ATEN_CPU_CAPABILITY": "default"}],
                         ids=["no_amx", "avx512_no_amx", "avx2", "default"])
def test_every_build(env):
    """The other builds (subprocesses: the build is chosen once per process)
    against the same reference, on shapes through every code path."""
    code = "\n".join([
        "import sys, torch",
        "import lstm_ext",
        "from lstm_ext.nn.quantized import quantize_weight",
        "torch.manual_seed(0)",
        "res = []",
        "for T, B, I, H in [(5, 7, 40, 37), (3, 20, 64, 32), (2, 2, 9, 16)]:",
        "    x = torch.randn(T, B, I); h0 = torch.randn(B, H) * 0.5; c0 = torch.randn(B, H)",
        "    qi, si = quantize_weight(torch.randn(4 * H, I) / H ** 0.5)",
        "    qh, sh = quantize_weight(torch.randn(4 * H, H) / H ** 0.5)",
        "    b = torch.randn(4 * H)",
        "    x[1, 0, 2] = float('nan')",
        "    args = [x, h0, c0, qi, si, qh, sh, b]",
        "    res.append((args, torch.ops.lstm_ext.lstm_layer_forward_int8(*args, None)))",
        "torch.save(res, sys.argv[1])",
        "print(torch.ops.lstm_ext.int8_kernel_build())",
    ])
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.pt")
        done = subprocess.run([sys.executable, "-c", code, path], env=dict(os.environ, **env),
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        build = done.stdout.strip()
        results = torch.load(path)
    here = torch.ops.lstm_ext.int8_kernel_build()
    if env.get("ATEN_CPU_CAPABILITY") in ("avx2", "default"):
        assert build == env["ATEN_CPU_CAPABILITY"] or lstm_ext.pointwise_capability() == "default"
    elif here in ("amx_int8", "avx512_vnni"):
        assert build == "avx512_vnni"
    for args, (out, hy, cy) in results:
        ref_out, ref_c = reference(*args, None, out)
        nan = ref_out.isnan()
        assert torch.equal(out.isnan(), nan) and nan.any()
        torch.testing.assert_close(out.double()[~nan], ref_out[~nan], **TIGHT)
        nan_c = ref_c.isnan()
        torch.testing.assert_close(cy.double()[~nan_c], ref_c[~nan_c], **TIGHT)


# -- arguments and gradients ---------------------------------------------------------------


def bad(args, index, value):
    args = list(args)
    args[index] = value
    return args


def set_at(t, where, value):
    t = t.clone()
    t[where] = value
    return t


@pytest.mark.parametrize("change, message", [
    (lambda a: bad(a, 0, a[0].double()), "expected input to have dtype Float"),
    (lambda a: bad(a, 0, a[0][0]), "expected input to be 3-D"),
    (lambda a: bad(a, 5, a[5].float()), "expected w_hh to have dtype Char"),
    (lambda a: bad(a, 3, a[3].float()), "expected w_ih to have dtype Char"),
    (lambda a: bad(a, 3, a[3][:, :-1]), r"expected w_ih of shape \[20, 6\]"),
    (lambda a: bad(a, 1, a[1][:, :-1]), r"expected hx of shape \[4, 5\]"),
    (lambda a: bad(a, 2, a[2].double()), "expected cx to have dtype Float"),
    (lambda a: bad(a, 4, a[4][:-1]), r"expected w_ih_scale of shape \[20\] \(4 \* hidden_size\)"),
    (lambda a: bad(a, 6, a[6].double()), "expected w_hh_scale to have dtype Float"),
    (lambda a: bad(a, 7, a[7][:5]), r"expected bias of shape \[20\]"),
    (lambda a: bad(a, 7, a[7].half()), "expected bias to have dtype Float"),
    # -128 has no negation in int8: the AVX2 kernel's sign trick gave a product
    # of the wrong sign (-0.0655 where float32 gave 0.1792)
    (lambda a: bad(a, 3, set_at(a[3], (13, 4), -128)),
     r"expected w_ih in \[-127, 127\] \(symmetric int8: the kernels negate weights\), "
     r"but w_ih\[13, 4\] = -128"),
    (lambda a: bad(a, 5, set_at(a[5], (19, 0), -128)), r"expected w_hh in .* but w_hh\[19, 0\] = -128"),
], ids=["input_dtype", "input_dim", "w_hh_dtype", "w_ih_dtype", "w_ih_shape", "hx_shape",
        "cx_dtype", "scale_shape", "scale_dtype", "bias_shape", "bias_dtype", "w_ih_minus_128",
        "w_hh_minus_128"])
def test_bad_arguments(change, message):
    _, args = make_args(3, 4, 6, 5)
    with pytest.raises(RuntimeError, match="lstm_layer_forward_int8: " + message):
        op(*change(args), None)


def test_bad_lengths_and_sizes():
    _, args = make_args(3, 4, 6, 5)
    with pytest.raises(RuntimeError, match="lstm_layer_forward_int8: lengths must be sorted"):
        op(*args, torch.tensor([1, 3, 2, 1]))
    with pytest.raises(RuntimeError, match=r"lengths\[0\] = 4 is outside"):
        op(*args, torch.tensor([4, 3, 2, 1]))
    x = torch.zeros(1, 1, 65537)
    w_ih = torch.zeros(4, 65537, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="input_size and hidden_size <= 65536"):
        op(x, torch.zeros(1, 1), torch.zeros(1, 1), w_ih, torch.ones(4),
           torch.zeros(4, 1, dtype=torch.int8), torch.ones(4), None, None)


def test_no_gradient():
    """Inference only: inputs requiring grad are refused in grad mode, with
    the reason; under no_grad they run; outputs never require grad."""
    _, args = make_args(3, 4, 6, 5)
    x = args[0].clone().requires_grad_()
    with pytest.raises(RuntimeError, match="lstm_layer_forward_int8: is inference-only .* input "
                                           "requires grad"):
        op(x, *args[1:], None)
    with pytest.raises(RuntimeError, match="bias requires grad"):
        op(*args[:7], args[7].clone().requires_grad_(), None)
    with torch.no_grad():
        out = op(x, *args[1:], None)
    assert not any(t.requires_grad for t in out)
    assert not any(t.requires_grad for t in op(*args, None))


def test_opcheck():
    _, args = make_args(3, 4, 6, 5)
    torch.library.opcheck(op, (*args, torch.tensor([3, 2, 2, 1])))
    torch.library.opcheck(op, (*args[:7], None, None))


def test_functional_api_and_build_name():
    _, args = make_args(2, 3, 4, 5)
    out = lstm_ext.lstm_layer_int8(*args)
    assert torch.equal(out[0], op(*args, None)[0])
    assert torch.ops.lstm_ext.int8_kernel_build() in (
        "amx_int8", "avx512_vnni", "avx512", "avx2", "default")
