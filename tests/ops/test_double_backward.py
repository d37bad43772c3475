"""Second-order gradients (create_graph=True) of the cell and layer ops:
gradgradcheck in float64 on the ops' sample lists, and a gradient penalty
through lstm_ext.LSTM against torch.nn.LSTM's."""
import pytest
import torch
from torch import nn

import lstm_ext
from helpers import F64, cell_samples, layer_samples, leaf, params

op = torch.ops.lstm_ext
# Small samples only: gradgradcheck's cost grows with the square of the input
# count. Each kind of sample is still covered: bias or none, lengths, proj.
CELL = [s for s in cell_samples() if s.args[0].shape[0] <= 3]
LAYER = [s for s in layer_samples() if not s.id.startswith(("blocked", "proj-blocked"))]


@pytest.mark.parametrize("sample", params(CELL, torch.float64))
def test_cell_gradgradcheck(sample):
    assert torch.autograd.gradgradcheck(lstm_ext.lstm_cell, leaf(sample.args))


@pytest.mark.parametrize("sample", params(LAYER, torch.float64))
def test_layer_gradgradcheck(sample):
    assert torch.autograd.gradgradcheck(lstm_ext.lstm_layer, leaf(sample.args), fast_mode=True)


def test_layer_gradgradcheck_only_h_n():
    """Undefined output gradients (only h_n used) take the same path."""
    s = next(s for s in LAYER if s.args[7] is not None and s.dtype == torch.float64)
    assert torch.autograd.gradgradcheck(lambda *a: lstm_ext.lstm_layer(*a)[1], leaf(s.args))


def test_first_order_values_are_the_same_with_create_graph():
    """create_graph switches to the recomputation: its first-order gradients
    are the kernels' own, to round-off."""
    s = next(s for s in LAYER if s.args[8] is not None and s.dtype == torch.float64)
    a, b = leaf(s.args), leaf(s.args)
    ga = torch.autograd.grad(sum(t.sum() for t in lstm_ext.lstm_layer(*a)),
                             [t for t in a if t is not None and t.requires_grad])
    gb = torch.autograd.grad(sum(t.sum() for t in lstm_ext.lstm_layer(*b)),
                             [t for t in b if t is not None and t.requires_grad],
                             create_graph=True)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, **F64)


@pytest.mark.parametrize("proj_size", [0, 2])
def test_gradient_penalty_matches_nn_lstm(proj_size):
    torch.manual_seed(0)
    theirs = nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=proj_size,
                     dtype=torch.float64)
    ours = lstm_ext.LSTM.from_torch(theirs)
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    grads = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_()
        out, _ = m(xi)
        (gx,) = torch.autograd.grad(out.pow(2).sum(), xi, create_graph=True)
        penalty = gx.pow(2).sum()
        grads.append(torch.autograd.grad(penalty, list(m.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **F64)
