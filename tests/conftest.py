"""Shared helpers. Tolerances: float64 results must match the reference to
1e-10 (both are exact up to round-off); float32 to atol 2e-5 / rtol 1e-4 (the
kernels use a polynomial exp with ~1e-6 relative error and a different
summation order than the reference's GEMMs)."""
import os

# Before the op library loads: every buffer the kernels allocate starts as NaN
# (and c10's allocator junk-fills fresh blocks), so that a kernel reading
# memory it never wrote shows as NaN in a result (NaN propagates like torch.nn).
os.environ.setdefault("LSTM_EXT_POISON", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import lstm_ext  # noqa: E402, F401  (loads the op library)

F64 = dict(atol=1e-10, rtol=1e-10)
F32 = dict(atol=2e-5, rtol=1e-4)


def tol(dtype):
    return F64 if dtype == torch.float64 else F32


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


def leaf(args):
    """Detached copies that require grad (None stays None)."""
    return [None if a is None else a.detach().clone().requires_grad_(True) for a in args]


def grads(outputs, inputs, weights):
    """Gradients of sum(w_k * out_k) with respect to every input (None if unused)."""
    loss = sum((o * w).sum() for o, w in zip(outputs, weights))
    present = [a for a in inputs if a is not None]
    got = torch.autograd.grad(loss, present, allow_unused=True)
    it = iter(got)
    return [None if a is None else next(it) for a in inputs]


@pytest.fixture(params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request):
    return request.param
