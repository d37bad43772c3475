"""The cell ops against the reference equations, nn.LSTMCell, gradcheck, opcheck.

One list of sample inputs per op (helpers.cell_samples, cell_backward_samples)
drives the correctness, gradcheck and opcheck tests."""
import os
import subprocess
import sys

import pytest
import torch

import lstm_ext
from helpers import (ROOT, TESTS, assert_matches_reference, cell_backward_samples, cell_samples,
                     leaf, make_cell_args, params, tol)
from lstm_ext import reference

op = torch.ops.lstm_ext
SAMPLES = cell_samples()


@pytest.mark.parametrize("sample", params(SAMPLES))
def test_forward_and_gradients_match_reference(sample):
    assert_matches_reference(lstm_ext.lstm_cell, reference.lstm_cell, sample.args, sample.dtype)


def test_matches_nn_lstmcell_with_copied_weights(dtype):
    torch.manual_seed(0)
    nn_cell = torch.nn.LSTMCell(10, 20, dtype=dtype)
    cell = lstm_ext.LSTMCell(10, 20, dtype=dtype)
    cell.load_state_dict(nn_cell.state_dict())
    x = torch.randn(6, 10, dtype=dtype)
    state = (torch.randn(6, 20, dtype=dtype), torch.randn(6, 20, dtype=dtype))
    h, c = cell(x, state)
    h_nn, c_nn = nn_cell(x, state)
    torch.testing.assert_close(h, h_nn, **tol(dtype))
    torch.testing.assert_close(c, c_nn, **tol(dtype))
    (h.sum() + 2 * c.sum()).backward()
    (h_nn.sum() + 2 * c_nn.sum()).backward()
    for name, p in cell.named_parameters():
        torch.testing.assert_close(p.grad, dict(nn_cell.named_parameters())[name].grad,
                                   **tol(dtype))


@pytest.mark.parametrize("sample", params(SAMPLES, torch.float64))
def test_gradcheck(sample):
    """Every input, the state included (fast mode for the larger samples)."""
    args = leaf(sample.args)
    assert torch.autograd.gradcheck(lambda *a: lstm_ext.lstm_cell(*a), args,
                                    fast_mode=sample.fast_gradcheck)


def test_gradcheck_only_one_output_used():
    """An unused output's gradient arrives undefined; the backward treats it as zero."""
    args = make_cell_args(3, 4, 5, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: lstm_ext.lstm_cell(*a)[0], args)
    assert torch.autograd.gradcheck(lambda *a: lstm_ext.lstm_cell(*a)[1], args)


@pytest.mark.parametrize("sample", params(SAMPLES))
def test_opcheck(sample):
    torch.library.opcheck(op.lstm_cell_forward.default, leaf(sample.args))


@pytest.mark.parametrize("sample", params(cell_backward_samples()))
def test_opcheck_backward(sample):
    torch.library.opcheck(op.lstm_cell_backward.default, sample.args)


def test_backward_skips_unneeded_gradients():
    x, h, c, w_ih, w_hh, b_ih, b_hh = make_cell_args(3, 4, 5)
    hy, cy, gates = op.lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh)
    out = op.lstm_cell_backward(torch.ones_like(hy), None, x, h, c, w_ih, w_hh, gates, cy,
                                [False, True, False, False, True, False])
    assert [t is None for t in out] == [True, False, True, True, False, True]


@pytest.mark.parametrize("batch", [0, 1])
def test_small_batches(batch):
    args = leaf(make_cell_args(batch, 4, 5))
    h, c = lstm_ext.lstm_cell(*args)
    h_ref, c_ref = reference.lstm_cell(*args)
    assert h.shape == (batch, 5)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)
    (h.sum() + c.sum()).backward()
    assert args[3].grad.shape == args[3].shape


def test_non_contiguous_inputs():
    x, h, c, w_ih, w_hh, b_ih, b_hh = make_cell_args(6, 4, 5)
    nc = [x.t().contiguous().t(), h[:, :], torch.cat([c, c], 1)[:, ::2],
          w_ih.t().contiguous().t(), w_hh.t().contiguous().t(), torch.stack([b_ih, b_ih], 1)[:, 0],
          b_hh]
    assert not nc[0].is_contiguous() and not nc[2].is_contiguous() and not nc[5].is_contiguous()
    torch.testing.assert_close(lstm_ext.lstm_cell(*nc), reference.lstm_cell(*nc))


def test_saturated_inputs_stay_finite():
    x, h, c, w_ih, w_hh, b_ih, b_hh = make_cell_args(4, 3, 8, dtype=torch.float32)
    x = x * 1e4
    h_out, c_out = lstm_ext.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    h_ref, c_ref = reference.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
    assert torch.isfinite(h_out).all() and torch.isfinite(c_out).all()
    torch.testing.assert_close(h_out, h_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_other_cpu_capability_builds_agree(capability):
    """The AVX2 and portable builds of the vectorised kernels (pointwise,
    small GEMM, batch-1 GEMV; chosen by ATEN_CPU_CAPABILITY) give the
    reference's results too."""
    code = (
        f"import torch, lstm_ext, sys; sys.path.insert(0, {TESTS!r});"
        "from helpers import make_cell_args; from lstm_ext import reference;"
        "a = make_cell_args(5, 7, 19, dtype=torch.float32);"
        "torch.testing.assert_close(lstm_ext.lstm_cell(*a), reference.lstm_cell(*a), atol=2e-5, rtol=1e-4);"
        "x = torch.randn(6, 9, 7);"
        "l = [torch.randn(9, 19), torch.randn(9, 19)];"
        "w = [torch.randn(76, 7) * .3, torch.randn(76, 19) * .3, torch.randn(76), None];"
        "torch.testing.assert_close(lstm_ext.lstm_layer(x, *l, *w), reference.lstm_layer(x, *l, *w), atol=2e-5, rtol=1e-4);"
        "torch.testing.assert_close(lstm_ext.lstm_layer(x[:, :1], l[0][:1], l[1][:1], *w), reference.lstm_layer(x[:, :1], l[0][:1], l[1][:1], *w), atol=2e-5, rtol=1e-4);"
        "print(lstm_ext.pointwise_capability())"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability)
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == capability


BAD = [
    (lambda a: [a[0][:, :3]] + a[1:], "w_ih of shape [20, 3]"),
    (lambda a: a[:1] + [a[1][:, :4]] + a[2:], "hx of shape [3, 5] (batch, hidden_size), but got [3, 4]"),
    (lambda a: a[:2] + [a[2][:2]] + a[3:], "cx of shape [3, 5]"),
    (lambda a: a[:4] + [a[4][:, :4]] + a[5:], "w_hh of shape [16, 4]"),
    (lambda a: a[:5] + [a[5][:7]] + a[6:], "b_ih of shape [20]"),
    (lambda a: [a[0].float()] + a[1:], "w_hh to have dtype Float (the dtype of input), but got Double"),
    (lambda a: [a[0].int()] + a[1:], "input to be float32, float64 or bfloat16, but got Int"),
    (lambda a: a[:3] + [a[3].float()] + a[4:], "w_ih to have dtype Double"),
    (lambda a: [a[0][0]] + a[1:], "input to be 2-D (batch, input_size)"),
    (lambda a: a[:3] + [a[3].to("meta")] + a[4:], "w_ih on"),
]


@pytest.mark.parametrize("mutate,message", BAD)
def test_bad_input_is_a_clear_error(mutate, message):
    args = mutate(make_cell_args(3, 4, 5))
    with pytest.raises(RuntimeError) as err:
        op.lstm_cell_forward(*args)
    assert message in str(err.value)
    assert "lstm_cell_forward" in str(err.value)


def test_bad_backward_input_is_a_clear_error():
    x, h, c, w_ih, w_hh, b_ih, b_hh = make_cell_args(3, 4, 5)
    hy, cy, gates = op.lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh)
    with pytest.raises(RuntimeError, match=r"gates of shape \[3, 20\]"):
        op.lstm_cell_backward(hy, cy, x, h, c, w_ih, w_hh, gates[:, :5], cy, [True] * 6)
    with pytest.raises(RuntimeError, match="grad_hy of shape"):
        op.lstm_cell_backward(hy[:1], cy, x, h, c, w_ih, w_hh, gates, cy, [True] * 6)
