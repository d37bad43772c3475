"""bfloat16: the cell and layer ops, their gradients, the modules, autocast,
the fallback kernel builds, NaN/inf, and the errors for float16 and mixed dtypes.

Tolerances. bfloat16 keeps 8 significant bits: its unit roundoff is
u = 2^-8 (a value rounds with relative error <= u). The kernels store inputs,
weights, h and the returned results in bf16 but compute in float32, so each
forward value carries a few roundings of size u (the input projection's result,
h at every step, the returned value itself), damped by the gates' derivatives
(<= 1) and by f < 1 along c. Forward: |ours - ref| <= 4u * max(1, |ref|) per
element (measured: layer 1.6u, cell 2.2u, for pre-activations of a few units:
see realistic()). Gradients sum T * B products of bf16
operands (each operand within u) in float32 and are rounded to bf16 once, so
their error scales with the gradient's size rather than with each element:
max|ours - ref| <= 8u * max|ref| per tensor (measured: up to 2.0u). The
reference is float64 from the very bf16 values the op receives, so rounding of
the inputs themselves is not counted. Against torch.nn.LSTM / LSTMCell in
bf16 (same weights), whose own errors are of the same kind: ours must be no
less accurate than 2x theirs plus u (a regression check on accuracy, not
only a bound).
"""
import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_ext
from helpers import ROOT, TESTS, layer_args, make_cell_args
from lstm_ext import reference

BF16 = torch.bfloat16
U = 2.0 ** -8
FWD = 4 * U
GRAD = 8 * U


def fwd_error(got, want):
    """max |got - want| / max(1, |want|) elementwise, in float64."""
    got, want = got.double(), want.double()
    return ((got - want).abs() / want.abs().clamp(min=1)).max().item() if want.numel() else 0.0


def grad_error(got, want):
    """max |got - want| / max |want| over the tensor."""
    got, want = got.double(), want.double()
    if want.numel() == 0:
        return 0.0
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1e-30)


def bf16_leaves(args):
    return [None if a is None else a.detach().to(BF16).requires_grad_(a.is_floating_point())
            for a in args]


def f64_leaves(args):
    return [None if a is None else a.detach().double().requires_grad_() for a in args]


def run_and_grad(fn, args, weights, **kwargs):
    out = fn(*args, **kwargs)
    loss = sum((o.double() * w).sum() for o, w in zip(out, weights))
    present = [a for a in args if a is not None]
    grads = torch.autograd.grad(loss, present, allow_unused=True)
    it = iter(grads)
    return out, [None if a is None else next(it) for a in args]


def check_against_reference(fn, ref_fn, args, **kwargs):
    """Runs fn on bf16 copies of args and ref_fn in float64 on the same values;
    returns (forward errors, gradient errors) and asserts the dtypes."""
    ours = bf16_leaves(args)
    ref = f64_leaves(ours)
    with torch.no_grad():
        expected = ref_fn(*ref, **kwargs)
    weights = [torch.randn(e.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
               for k, e in enumerate(expected)]
    out, grads = run_and_grad(fn, ours, weights, **kwargs)
    expected, grads_ref = run_and_grad(ref_fn, ref, weights, **kwargs)
    for o in out:
        assert o.dtype == BF16
    fe = [fwd_error(o, e) for o, e in zip(out, expected)]
    ge = []
    for a, g, gr in zip(ours, grads, grads_ref):
        if a is None:
            continue
        assert g is not None and g.dtype == BF16
        ge.append(grad_error(g, gr))
    return fe, ge


def realistic(args, input_size, hidden):
    """helpers' arguments with the weights rescaled from std 0.5 to std
    2 / sqrt(input_size + hidden): pre-activations of a few units, through the
    non-linearities' curved range, as in a trained network (nn.LSTM's own
    initialisation gives std 0.6 / sqrt(hidden)). The forward bound is stated
    for pre-activations of this size: rounding errors scale with them."""
    scale = 4.0 / (input_size + hidden) ** 0.5
    out = list(args)
    out[3], out[4] = args[3] * scale, args[4] * scale
    return out


LAYER_CASES = [
    # (steps, batch, input, hidden, bias, lengths)
    (4, 3, 2, 3, True, None),
    (6, 4, 5, 7, False, [6, 6, 4, 1]),
    (5, 9, 3, 40, True, [5, 5, 4, 3, 3, 3, 3, 2, 1]),
    (7, 16, 8, 64, True, None),
    (3, 1, 5, 17, True, None),
    (20, 33, 17, 70, True, None),
    (9, 5, 12, 33, True, [9, 7, 7, 2, 1]),
]


def _layer_id(c):
    return f"t{c[0]}-b{c[1]}-i{c[2]}-h{c[3]}-{'bias' if c[4] else 'nobias'}-len{c[5] or 'all'}"


@pytest.mark.parametrize("case", LAYER_CASES, ids=_layer_id)
def test_layer_matches_reference(case):
    steps, batch, input_size, hidden, bias, lengths = case
    args = realistic(layer_args(steps, batch, input_size, hidden, dtype=torch.float32,
                                bias=bias), input_size, hidden)
    lens = None if lengths is None else torch.tensor(lengths)
    fe, ge = check_against_reference(lstm_ext.lstm_layer, reference.lstm_layer, args,
                                     lengths=lens)
    assert max(fe) <= FWD, fe
    assert max(ge) <= GRAD, ge


@pytest.mark.parametrize("shape", [(1, 4, 3), (3, 4, 5), (7, 5, 16), (33, 20, 37), (64, 48, 129)],
                         ids=lambda s: "b{}-i{}-h{}".format(*s))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_matches_reference(shape, bias):
    args = realistic(make_cell_args(*shape, dtype=torch.float32, bias=bias), shape[1], shape[2])
    fe, ge = check_against_reference(lstm_ext.lstm_cell, reference.lstm_cell, args)
    assert max(fe) <= FWD, fe
    assert max(ge) <= GRAD, ge


def test_ops_outputs_and_saved_dtypes():
    """bf16 results; the saved buffers: the layer's cs and the cell's gates
    are float32, the layer's gates bf16 (lstm_ext/ops.py's fakes agree)."""
    x, h, c, w_ih, w_hh, b_ih, b_hh = [a.to(BF16) for a in layer_args(3, 2, 4, 5)]
    out = torch.ops.lstm_ext.lstm_layer_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, None)
    assert [t.dtype for t in out] == [BF16, BF16, BF16, BF16, torch.float32]
    out = torch.ops.lstm_ext.lstm_cell_forward(x[0], h, c, w_ih, w_hh, b_ih, b_hh)
    assert [t.dtype for t in out] == [BF16, BF16, torch.float32]


@pytest.mark.parametrize("lengths", [None, [4, 3, 1]])
def test_layer_backward_reads_a_gradient_expanded_over_time(lengths):
    """The bf16 backward given out.sum()'s gradient (stride 0 in time, read
    one step for all) gives the same bits as that gradient materialized."""
    lengths = None if lengths is None else torch.tensor(lengths)
    args = [a.to(BF16) for a in layer_args(4, 3, 2, 5)]
    with torch.no_grad():
        output, hy, cy, gates, cs = torch.ops.lstm_ext.lstm_layer_forward(*args, lengths)
    expanded = torch.randn(1, 3, 5).to(BF16).expand_as(output)
    rest = [None, None, *args[:5], output, gates, cs, lengths, None, [True] * 7]
    got = torch.ops.lstm_ext.lstm_layer_backward(expanded, *rest)
    want = torch.ops.lstm_ext.lstm_layer_backward(expanded.contiguous(), *rest)
    for a, b in zip(got, want):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_opcheck_bf16():
    layer = [a.to(BF16) for a in layer_args(4, 3, 2, 5)] + [torch.tensor([4, 3, 1])]
    cell = [a.to(BF16) for a in make_cell_args(3, 4, 5)]
    tests = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(torch.ops.lstm_ext.lstm_layer_forward.default, layer, test_utils=tests)
    torch.library.opcheck(torch.ops.lstm_ext.lstm_cell_forward.default, cell, test_utils=tests)
    torch.library.opcheck(torch.ops.lstm_ext.lstm_layer_inference.default, layer,
                          test_utils=tests)


@pytest.mark.parametrize("case", LAYER_CASES, ids=_layer_id)
def test_layer_inference_op_bitwise(case):
    """The inference op (no gates stored, c in a ring of two steps) gives the
    forward op's output, h_n and c_n bit for bit, rows ending early included."""
    steps, batch, input_size, hidden, bias, lengths = case
    args = [a if a is None else a.to(BF16)
            for a in layer_args(steps, batch, input_size, hidden, dtype=torch.float32, bias=bias)]
    lens = None if lengths is None else torch.tensor(lengths)
    torch.testing.assert_close(torch.ops.lstm_ext.lstm_layer_inference(*args, lens),
                               torch.ops.lstm_ext.lstm_layer_forward(*args, lens)[:3],
                               rtol=0, atol=0)


# -- against torch.nn in bf16 -----------------------------------------------------------------


def _nn_lstm_pair(I, H, layers, bidir, batch_first, bias=True):
    torch.manual_seed(0)
    theirs = nn.LSTM(I, H, layers, bias=bias, batch_first=batch_first, bidirectional=bidir)
    theirs = theirs.to(BF16)
    ours = lstm_ext.LSTM.from_torch(theirs)
    exact = nn.LSTM(I, H, layers, bias=bias, batch_first=batch_first, bidirectional=bidir)
    exact = exact.double()
    exact.load_state_dict({k: v.double() for k, v in theirs.state_dict().items()})
    return ours, theirs, exact


def _run_module(module, x, weights, make):
    params = list(module.parameters())
    xi = x.detach().requires_grad_()
    out, (h, c) = module(make(xi))
    data = out if isinstance(out, torch.Tensor) else out.data
    loss = sum((t.double() * w).sum() for t, w in zip((data, h, c), weights))
    grads = torch.autograd.grad(loss, [xi] + params)
    return [data, h, c], list(grads)


@pytest.mark.parametrize("layers,bidir,batch_first,packed", [
    (1, False, False, False), (2, True, True, False), (2, False, False, True),
    (1, True, False, True)], ids=["1layer", "2layer-bidir-bf", "2layer-packed",
                                  "bidir-packed"])
def test_lstm_module_against_nn_bf16(layers, bidir, batch_first, packed):
    I, H, T, B = 6, 24, 9, 5
    ours, theirs, exact = _nn_lstm_pair(I, H, layers, bidir, batch_first)
    x = torch.randn(T, B, I).to(BF16)
    if batch_first:
        x = x.transpose(0, 1).contiguous()
    lengths = torch.tensor([9, 8, 8, 4, 1])
    if packed:
        make = lambda t: pack_padded_sequence(t, lengths, batch_first=batch_first)  # noqa: E731
    else:
        make = lambda t: t  # noqa: E731
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = exact(make(x.double()))
    ref_data = ref_out.data if packed else ref_out
    weights = [torch.randn(t.shape, dtype=torch.float64) for t in (ref_data, ref_h, ref_c)]
    got, g_got = _run_module(ours, x, weights, make)
    nn_out, g_nn = _run_module(theirs, x, weights, make)
    want, g_want = _run_module(exact, x.double(), weights, make)
    for a, b, e in zip(got, nn_out, want):
        assert a.dtype == BF16
        ours_err, nn_err = fwd_error(a, e), fwd_error(b, e)
        assert ours_err <= FWD and ours_err <= 2 * nn_err + U, (ours_err, nn_err)
    for a, b, e in zip(g_got, g_nn, g_want):
        assert a.dtype == BF16
        ours_err, nn_err = grad_error(a, e), grad_error(b, e)
        assert ours_err <= GRAD and ours_err <= 2 * nn_err + U, (ours_err, nn_err)


@pytest.mark.parametrize("batch", [1, 7])
def test_cell_module_against_nn_bf16(batch):
    I, H = 5, 19
    torch.manual_seed(0)
    theirs = nn.LSTMCell(I, H).to(BF16)
    ours = lstm_ext.LSTMCell(I, H).to(BF16)
    ours.load_state_dict(theirs.state_dict())
    exact = nn.LSTMCell(I, H).double()
    exact.load_state_dict({k: v.double() for k, v in theirs.state_dict().items()})
    x, h, c = (torch.randn(batch, n).to(BF16) for n in (I, H, H))

    def run(m, dtype):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (x, h, c)]
        out = m(leaves[0], (leaves[1], leaves[2]))
        w = [torch.ones_like(o, dtype=torch.float64) * (k + 1) for k, o in enumerate(out)]
        loss = sum((o.double() * wk).sum() for o, wk in zip(out, w))
        return list(out), list(torch.autograd.grad(loss, leaves + list(m.parameters())))

    got, g_got = run(ours, BF16)
    nn_out, g_nn = run(theirs, BF16)
    want, g_want = run(exact, torch.float64)
    for a, b, e in zip(got, nn_out, want):
        assert a.dtype == BF16
        assert fwd_error(a, e) <= FWD and fwd_error(a, e) <= 2 * fwd_error(b, e) + U
    for a, b, e in zip(g_got, g_nn, g_want):
        assert a.dtype == BF16
        assert grad_error(a, e) <= GRAD and grad_error(a, e) <= 2 * grad_error(b, e) + U


def test_lstm_model_bf16():
    model = lstm_ext.LSTMModel(4, 8, 2).to(BF16)
    y = model(torch.randn(3, 6, 4).to(BF16))
    assert y.dtype == BF16 and y.shape == (3, 2)
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == BF16 for p in model.parameters())


# -- autocast -------------------------------------------------------------------------------


def test_autocast_layer_runs_bf16_like_nn_lstm():
    """Under torch.autocast("cpu", bfloat16) a float32 module on float32 input
    runs the bf16 kernels: the same result as the module cast to bf16, bf16
    outputs like nn.LSTM's, float32 gradients for the float32 parameters."""
    torch.manual_seed(0)
    theirs = nn.LSTM(6, 16, 2)
    ours = lstm_ext.LSTM.from_torch(theirs)
    x = torch.randn(5, 3, 6)
    with torch.autocast("cpu", dtype=BF16):
        out, (h, c) = ours(x)
    try:
        with torch.autocast("cpu", dtype=BF16):
            nn_out, (nn_h, nn_c) = theirs(x)
    except RuntimeError:
        # Without avx512bw/avx_ne_convert (an AVX2-only AMD EPYC), torch
        # 2.13's autocast LSTM fails in oneDNN ("could not create a primitive
        # descriptor for the LSTM forward propagation primitive"); ours runs.
        # nn.LSTM cast to bf16 takes its native path there.
        assert not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        nn_out, (nn_h, nn_c) = copy.deepcopy(theirs).to(BF16)(x.to(BF16))
    assert out.dtype == h.dtype == c.dtype == BF16
    assert nn_out.dtype == nn_h.dtype == nn_c.dtype == BF16
    cast = lstm_ext.LSTM.from_torch(theirs).to(BF16)
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = cast(x.to(BF16))
    assert torch.equal(out, ref_out) and torch.equal(h, ref_h) and torch.equal(c, ref_c)
    assert fwd_error(out, nn_out) <= 2 * FWD
    out.float().sum().backward()
    for p in ours.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32


def test_autocast_cell_and_functional():
    x, h, c, w_ih, w_hh, b_ih, b_hh = make_cell_args(3, 4, 5, dtype=torch.float32)
    with torch.autocast("cpu", dtype=BF16):
        hy, cy = lstm_ext.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    assert hy.dtype == cy.dtype == BF16
    want = lstm_ext.lstm_cell(*[a.to(BF16) for a in (x, h, c, w_ih, w_hh, b_ih, b_hh)])
    assert torch.equal(hy, want[0]) and torch.equal(cy, want[1])
    cell = lstm_ext.LSTMCell(4, 5)
    with torch.autocast("cpu", dtype=BF16):
        assert cell(x)[0].dtype == BF16


def test_autocast_keeps_float64_and_off_keeps_float32():
    args64 = layer_args(3, 2, 4, 5, dtype=torch.float64)
    with torch.autocast("cpu", dtype=BF16):
        out = lstm_ext.lstm_layer(*args64)
    assert out[0].dtype == torch.float64
    torch.testing.assert_close(out[0], reference.lstm_layer(*args64)[0], atol=1e-10, rtol=1e-10)
    args32 = layer_args(3, 2, 4, 5, dtype=torch.float32)
    with torch.autocast("cpu", dtype=BF16, enabled=False):
        assert lstm_ext.lstm_layer(*args32)[0].dtype == torch.float32


def test_autocast_float16_is_refused():
    args = layer_args(3, 2, 4, 5, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.float16):
        # no argument requires grad: lstm_layer runs the inference op
        with pytest.raises(RuntimeError, match="lstm_layer_inference: float16 .* not supported"):
            lstm_ext.lstm_layer(*args)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["layer", "cell"])
def test_float16_error_names_op_and_dtype(op):
    if op == "layer":
        args = [a.half() for a in layer_args(3, 2, 4, 5)]
        fn, name = lstm_ext.lstm_layer, "lstm_layer_inference"  # nothing requires grad
    else:
        args = [a.half() for a in make_cell_args(2, 4, 5)]
        fn, name = lstm_ext.lstm_cell, "lstm_cell_forward"
    with pytest.raises(RuntimeError, match=name + r": float16 \(Half\) is not supported"):
        fn(*args)


def test_float16_module_error():
    m = lstm_ext.LSTM(4, 5).half()
    with pytest.raises(RuntimeError, match=r"lstm_layer_forward: float16 \(Half\) is not supported"):
        m(torch.randn(3, 2, 4).half())


def test_mixed_dtypes_keep_their_errors():
    x, h, c, w_ih, w_hh, b_ih, b_hh = layer_args(3, 2, 4, 5, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"w_hh to have dtype BFloat16 \(the dtype of input\), "
                                           r"but got Float"):
        lstm_ext.lstm_layer(x.to(BF16), h, c, w_ih, w_hh)
    with pytest.raises(RuntimeError, match=r"hx to have dtype Float \(the dtype of input\), "
                                           r"but got BFloat16"):
        lstm_ext.lstm_layer(x, h.to(BF16), c, w_ih, w_hh)
    with pytest.raises(RuntimeError, match=r"b_ih to have dtype BFloat16"):
        lstm_ext.lstm_layer(*[a.to(BF16) for a in (x, h, c, w_ih, w_hh)], b_ih, None)
    m = lstm_ext.LSTM(4, 5)
    with pytest.raises(TypeError, match="expected input to have dtype torch.float32"):
        m(torch.randn(3, 2, 4).to(BF16))


def test_saved_tensor_dtypes_checked():
    x, h, c, w_ih, w_hh, b_ih, b_hh = [a.to(BF16) for a in layer_args(3, 2, 4, 5)]
    out, hy, cy, gates, cs = torch.ops.lstm_ext.lstm_layer_forward(x, h, c, w_ih, w_hh, b_ih,
                                                                    b_hh, None)
    with pytest.raises(RuntimeError, match="expected cs to have dtype Float"):
        torch.ops.lstm_ext.lstm_layer_backward(out, None, None, x, h, c, w_ih, w_hh, out, gates,
                                               cs.to(BF16), None, None, [True] * 7)


# -- NaN and infinities ---------------------------------------------------------------------


def _nan_pattern(t):
    return torch.isnan(t), torch.isposinf(t), torch.isneginf(t)


@pytest.mark.parametrize("where", ["input", "h0", "c0", "weight_hh", "weight_ih", "bias_ih"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("batch", [1, 3])
def test_nan_inf_like_nn_lstm_bf16(where, value, batch):
    I, H, T = 3, 5, 4
    torch.manual_seed(0)
    theirs = nn.LSTM(I, H).to(BF16)
    ours = lstm_ext.LSTM.from_torch(theirs)
    x = torch.randn(T, batch, I).to(BF16)
    h0 = torch.randn(1, batch, H).to(BF16)
    c0 = torch.randn(1, batch, H).to(BF16)
    tensors = {"input": x, "h0": h0, "c0": c0}
    results = []
    for m in (ours, theirs):
        params = dict(m.named_parameters())
        with torch.no_grad():
            if where in tensors:
                tensors[where][(1 if where == "input" else 0, 0, 1)] = value
            else:
                p = params[where + "_l0"]
                if p.dim() == 2:
                    p[1 * H + 1, 1] = value
                else:
                    p[1 * H + 1] = value
        leaves = [t.detach().clone().requires_grad_() for t in (x, h0, c0)]
        out, (h, c) = m(leaves[0], (leaves[1], leaves[2]))
        loss = out.float().sum() + h.float().sum() + c.float().sum()
        grads = torch.autograd.grad(loss, leaves + list(m.parameters()))
        results.append([out, h, c] + list(grads))
    for k, (a, b) in enumerate(zip(*results)):
        for pa, pb in zip(_nan_pattern(a), _nan_pattern(b)):
            assert torch.equal(pa, pb), (k, pa.nonzero().tolist()[:5], pb.nonzero().tolist()[:5])


# -- other kernel builds --------------------------------------------------------------------


@pytest.mark.parametrize("capability", ["avx2", "default"])
def test_fallback_builds(capability):
    """The bf16 kernels' fallback (no AVX512-BF16: float32 sums on converted
    values) in the AVX2 and portable builds, selected by ATEN_CPU_CAPABILITY
    as ATen's own kernels are, against the reference and against this
    process's build."""
    if lstm_ext.pointwise_capability() == "default" and capability == "avx2":
        pytest.skip("this CPU has no AVX2 build")
    code = (
        "import sys, torch; sys.path.insert(0, {tests!r}); import lstm_ext;"
        "from helpers import layer_args;"
        "args = [a.to(torch.bfloat16) for a in layer_args(6, 9, 5, 37, dtype=torch.float32)];"
        "leaves = [a.requires_grad_() for a in args];"
        "out = lstm_ext.lstm_layer(*leaves, lengths=torch.tensor([6, 6, 5, 5, 4, 3, 2, 2, 1]));"
        "sum(o.float().sum() for o in out).backward();"
        "inf = torch.ops.lstm_ext.lstm_layer_inference(*[a.detach() for a in args],"
        " torch.tensor([6, 6, 5, 5, 4, 3, 2, 2, 1]));"
        "assert all(torch.equal(a, b) for a, b in zip(inf, out)), 'inference op differs';"
        "torch.save([o.detach() for o in out] + [a.grad for a in leaves], sys.argv[1]);"
        "print(torch.ops.lstm_ext.bf16_kernel_build())"
    ).format(tests=TESTS)
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "out.pt")
        env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
        done = subprocess.run([sys.executable, "-c", code, path], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == capability
        theirs = torch.load(path)
    args = [a.to(BF16) for a in layer_args(6, 9, 5, 37, dtype=torch.float32)]
    leaves = [a.requires_grad_() for a in args]
    lengths = torch.tensor([6, 6, 5, 5, 4, 3, 2, 2, 1])
    out = lstm_ext.lstm_layer(*leaves, lengths=lengths)
    sum(o.float().sum() for o in out).backward()
    mine = [o.detach() for o in out] + [a.grad for a in leaves]
    ref_args = [a.detach().double() for a in args]
    ref = reference.lstm_layer(*ref_args, lengths=lengths)
    for a, b in zip(theirs[:3], ref):
        assert fwd_error(a, b) <= FWD
    for a, b in zip(theirs, mine):
        assert a.dtype == b.dtype
        assert grad_error(a, b) <= GRAD


def test_float32_bitwise_against_baseline_library():
    """float32 results bitwise unchanged by the bf16 work: set
    LSTM_EXT_BASELINE_LIBRARY to a build of the code before it to compare."""
    baseline = os.environ.get("LSTM_EXT_BASELINE_LIBRARY")
    if not baseline:
        pytest.skip("LSTM_EXT_BASELINE_LIBRARY not set")
    code = "\n".join([
        "import sys, torch",
        "sys.path.insert(0, {tests!r})",
        "import lstm_ext",
        "from helpers import layer_args, make_cell_args",
        "res = []",
        "for shape in [(5, 9, 3, 40), (7, 16, 8, 64), (3, 1, 5, 17), (20, 33, 17, 70)]:",
        "    args = [a.float().requires_grad_() for a in layer_args(*shape)]",
        "    out = lstm_ext.lstm_layer(*args)",
        "    sum((o * (k + 1)).sum() for k, o in enumerate(out)).backward()",
        "    res += [o.detach() for o in out] + [a.grad for a in args]",
        "    cargs = [a.float().requires_grad_() for a in make_cell_args(*shape[1:])]",
        "    cout = lstm_ext.lstm_cell(*cargs)",
        "    sum((o * (k + 1)).sum() for k, o in enumerate(cout)).backward()",
        "    res += [o.detach() for o in cout] + [a.grad for a in cargs]",
        "torch.save(res, sys.argv[1])",
    ]).format(tests=TESTS)
    import tempfile
    results = []
    with tempfile.TemporaryDirectory() as d:
        for k, lib in enumerate((baseline, lstm_ext.library_path())):
            path = os.path.join(d, f"{k}.pt")
            env = dict(os.environ, LSTM_EXT_LIBRARY=lib)
            done = subprocess.run([sys.executable, "-c", code, path], env=env, cwd=ROOT,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr
            results.append(torch.load(path))
    for a, b in zip(*results):
        assert a.dtype == torch.float32 and torch.equal(a, b)
