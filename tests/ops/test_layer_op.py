"""The whole-sequence layer op against the reference, gradcheck, opcheck, lengths.

One list of sample inputs per op (helpers.layer_samples, layer_backward_samples)
drives the correctness, gradcheck and opcheck tests."""
import os
import subprocess
import sys

import pytest
import torch

import lstm_ext
from helpers import (ROOT, TESTS, assert_matches_reference, layer_args, layer_backward_samples,
                     layer_samples, leaf, lstm_ext_ops_called, params)
from lstm_ext import reference

op = torch.ops.lstm_ext
SAMPLES = layer_samples()


@pytest.mark.parametrize("sample", params(SAMPLES))
def test_forward_and_gradients_match_reference(sample):
    """Outputs and every gradient of the layer op against the reference."""
    assert_matches_reference(lstm_ext.lstm_layer, reference.lstm_layer, sample.args,
                             sample.dtype)


@pytest.mark.parametrize("sample", params(SAMPLES, torch.float64))
def test_gradcheck(sample):
    """Every input, all outputs used and only h_n (output and c_n gradients
    arrive undefined); fast mode for the larger samples."""
    args = leaf(sample.args)
    fast = sample.fast_gradcheck
    assert torch.autograd.gradcheck(lstm_ext.lstm_layer, args, fast_mode=fast)
    assert torch.autograd.gradcheck(lambda *a: lstm_ext.lstm_layer(*a)[1], args, fast_mode=fast)


@pytest.mark.parametrize("sample", params(SAMPLES))
def test_opcheck(sample):
    torch.library.opcheck(op.lstm_layer_forward.default, leaf(sample.args))


@pytest.mark.parametrize("sample", params(SAMPLES))
def test_inference_op_matches_forward_bitwise(sample):
    """lstm_layer_inference keeps nothing for a backward but computes the same
    output, h_n and c_n, bit for bit, with finite values and with NaN and inf
    (which then propagate alike)."""
    args = list(sample.args)
    torch.testing.assert_close(op.lstm_layer_inference(*args),
                               op.lstm_layer_forward(*args)[:3], rtol=0, atol=0)
    poisoned = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    poisoned[0][0, 0, 0] = float("nan")
    poisoned[4][1, 0] = float("inf")
    torch.testing.assert_close(op.lstm_layer_inference(*poisoned),
                               op.lstm_layer_forward(*poisoned)[:3], rtol=0, atol=0,
                               equal_nan=True)


@pytest.mark.parametrize("sample", params(SAMPLES))
def test_opcheck_inference(sample):
    torch.library.opcheck(op.lstm_layer_inference.default, sample.args)


def test_inference_op_refuses_gradients():
    args = leaf(layer_args(4, 3, 2, 3))
    with pytest.raises(RuntimeError, match=r"lstm_layer_inference: is inference-only .* but "
                                           r"input requires grad; run it under torch.no_grad"):
        op.lstm_layer_inference(*args, None)
    with torch.no_grad():
        out = op.lstm_layer_inference(*args, None)
    assert not any(t.requires_grad for t in out)


def test_lstm_layer_runs_the_inference_op_when_no_gradient_can_be_asked_for():
    args = layer_args(4, 3, 2, 3)
    with torch.no_grad():
        assert lstm_ext_ops_called(lambda: lstm_ext.lstm_layer(*args)) == ["lstm_layer_inference"]
    with torch.inference_mode():
        assert lstm_ext_ops_called(lambda: lstm_ext.lstm_layer(*args)) == ["lstm_layer_inference"]
    assert lstm_ext_ops_called(lambda: lstm_ext.lstm_layer(*args)) == ["lstm_layer_inference"]
    for k in range(len(args)):
        with_grad = [a.detach().requires_grad_(i == k) for i, a in enumerate(args)]
        assert lstm_ext_ops_called(lambda: lstm_ext.lstm_layer(*with_grad)) == \
            ["lstm_layer_forward"], k
    module = lstm_ext.LSTM(2, 3)
    x = torch.randn(4, 3, 2)
    assert lstm_ext_ops_called(lambda: module(x)) == ["lstm_layer_forward"]
    with torch.no_grad():
        assert lstm_ext_ops_called(lambda: module(x)) == ["lstm_layer_inference"]


@pytest.mark.parametrize("sample", params(layer_backward_samples()))
def test_opcheck_backward(sample):
    torch.library.opcheck(op.lstm_layer_backward.default, sample.args)


@pytest.mark.parametrize("sample", params(layer_backward_samples()))
@pytest.mark.parametrize("shape", ["scalar", "per_step"])
def test_backward_reads_a_gradient_expanded_over_time(sample, shape):
    """grad_output with stride 0 in time (out.sum()'s or out.mean()'s
    gradient: the kernel reads one step of it for all steps) gives the same
    bits as that gradient materialized."""
    args = list(sample.args)
    if args[0] is None:
        pytest.skip("no output gradient in this sample")
    T, B, P = args[0].shape
    g = torch.Generator().manual_seed(3)
    block = torch.randn(1, 1, 1) if shape == "scalar" else torch.randn(1, B, P, generator=g)
    expanded = block.to(args[0].dtype).expand(T, B, P)
    assert expanded.stride(0) == 0
    got = op.lstm_layer_backward(expanded, *args[1:])
    want = op.lstm_layer_backward(expanded.contiguous(), *args[1:])
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_padded_steps_output_zeros_and_take_no_gradient():
    args = leaf(layer_args(5, 3, 2, 4))
    out, h_n, c_n = lstm_ext.lstm_layer(*args, lengths=torch.tensor([5, 2, 1]))
    assert (out[2:, 1] == 0).all() and (out[1:, 2] == 0).all()
    torch.testing.assert_close(h_n[1], out[1, 1])
    out.sum().backward()
    assert (args[0].grad[2:, 1] == 0).all() and (args[0].grad[1:, 2] == 0).all()


@pytest.mark.parametrize("inputs", [1, 8, 9])
def test_padded_steps_hand_out_no_stale_gates(inputs):
    """The saved gates of rows past their length hold no stale memory: the
    step kernels that make the input projection themselves (input size up to
    8) never write them, so the op zeroes them. Fresh buffers are NaN under
    the suite's LSTM_EXT_POISON (conftest.py); a call whose freed blocks hold
    NaN comes first, for malloc to hand back without it."""
    args = list(layer_args(6, 5, inputs, 16))
    poisoned = [torch.full_like(args[0], float("nan"))] + args[1:]
    op.lstm_layer_forward(*poisoned, None, None)
    lengths = torch.tensor([6, 4, 4, 2, 1])
    out, h, c, gates, cs = op.lstm_layer_forward(*args, lengths, None)
    assert torch.isfinite(gates).all() and torch.isfinite(cs).all()
    if inputs <= 8:
        assert (gates[4:, 1:] == 0).all() and (gates[1:, 4] == 0).all()


@pytest.mark.parametrize("batch", [0, 1])
def test_small_batches(batch):
    args = leaf(layer_args(3, batch, 2, 4))
    out, h, c = lstm_ext.lstm_layer(*args)
    ref = reference.lstm_layer(*args)
    torch.testing.assert_close(out, ref[0])
    (out.sum() + h.sum()).backward()
    assert args[3].grad.shape == args[3].shape


def test_non_contiguous_input():
    args = layer_args(5, 3, 4, 6)
    x = args[0].transpose(0, 1).contiguous().transpose(0, 1)[:, :, :]
    x = torch.cat([x, x], 2)[:, :, ::2]
    assert not x.is_contiguous()
    torch.testing.assert_close(lstm_ext.lstm_layer(x, *args[1:]),
                               reference.lstm_layer(x, *args[1:]))


@pytest.mark.parametrize("lengths,message", [
    ([3, 4, 1], "lengths must be sorted in non-increasing order"),
    ([4, 3, 0], r"lengths\[2\] = 0 is outside \[1, seq_len = 4\]"),
    ([4, 3, -1], "is outside"),
    ([6, 3, 1], r"lengths\[0\] = 6 is outside \[1, seq_len = 4\]"),
    ([4, 3], r"lengths of shape \[3\] \(batch\)"),
])
def test_bad_lengths(lengths, message):
    args = layer_args(4, 3, 2, 3)
    with pytest.raises(RuntimeError, match=message):
        op.lstm_layer_forward(*args, torch.tensor(lengths))


def test_bad_shapes():
    x, h, c, w_ih, w_hh, b_ih, b_hh = layer_args(4, 3, 2, 3)
    with pytest.raises(RuntimeError, match=r"input to be 3-D \(seq_len, batch, input_size\)"):
        op.lstm_layer_forward(x[0], h, c, w_ih, w_hh, b_ih, b_hh, None)
    with pytest.raises(RuntimeError, match=r"w_ih of shape \[12, 3\]"):
        op.lstm_layer_forward(torch.cat([x, x[..., :1]], 2), h, c, w_ih, w_hh, b_ih, b_hh, None)
    with pytest.raises(RuntimeError, match="lengths to have dtype int64"):
        op.lstm_layer_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, torch.tensor([4.0, 3.0, 1.0]))


def test_reused_buffers_never_alias_live_outputs():
    """Large buffers come from a cache of freed blocks: outputs still held must
    survive later calls of the same shape, forward and backward."""
    args = leaf(layer_args(64, 64, 8, 96))  # float64 gates: 12.6 MB
    first = lstm_ext.lstm_layer(*args)
    kept = [t.detach().clone() for t in first]
    for seed in range(3):
        other = leaf(layer_args(64, 64, 8, 96, seed=seed + 1))
        out = lstm_ext.lstm_layer(*other)
        out[0].sum().backward()
        del out, other
    for a, b in zip(first, kept):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    first[0].sum().backward()
    ref = leaf(args)
    reference.lstm_layer(*ref)[0].sum().backward()
    torch.testing.assert_close(args[3].grad, ref[3].grad, atol=1e-8, rtol=1e-10)


def test_buffer_cache_can_be_turned_off():
    code = ("import torch, lstm_ext; x = torch.randn(64, 64, 8); h = torch.zeros(64, 96);"
            "w = [torch.randn(384, 8), torch.randn(384, 96)];"
            "print(lstm_ext.lstm_layer(x, h, h, *w)[0].shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "LSTM_EXT_CACHE_MB": "0"}, timeout=120)
    assert done.returncode == 0 and "[64, 64, 96]" in done.stdout, done.stderr


def test_library_gemm_path_matches_reference():
    """LSTM_EXT_GEMM=aten (ATen GEMMs plus separate pointwise passes instead of
    the step kernels) computes the same, forward and backward."""
    code = (
        f"import sys, torch, lstm_ext; sys.path.insert(0, {TESTS!r});"
        "from helpers import grads, layer_args, leaf;"
        "from lstm_ext import reference\n"
        "for b, h, lens in ((9, 19, [6, 6, 5, 4, 4, 3, 2, 1, 1]), (1, 33, None), (4, 8, None)):\n"
        "    a = layer_args(6, b, 3, h); o, r = leaf(a), leaf(a)\n"
        "    l = None if lens is None else torch.tensor(lens)\n"
        "    out = lstm_ext.lstm_layer(*o, lengths=l); exp = reference.lstm_layer(*r, lengths=l)\n"
        "    torch.testing.assert_close(out, exp, atol=1e-10, rtol=1e-10)\n"
        "    w = [torch.randn_like(t) for t in exp]\n"
        "    torch.testing.assert_close(grads(out, o, w), grads(exp, r, w), atol=1e-10, rtol=1e-10)\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "LSTM_EXT_GEMM": "aten"}, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
