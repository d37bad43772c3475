"""lstm_ext.LSTM with proj_size (LSTMP) against torch.nn.LSTM with copied
weights: outputs, states and every gradient over the option grid, packed
sequences, TorchScript, and the constructor's and forward's checks."""
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from helpers import F32, F64

# num_layers, bidirectional, batch_first, bias, with_state
GRID = list(itertools.product([1, 2, 3], [False, True], [False, True], [True, False],
                              [False, True]))
I, H, P, B, T = 5, 7, 3, 4, 6


def pair(num_layers=1, bidirectional=False, batch_first=False, bias=True, dtype=torch.float64):
    torch.manual_seed(0)
    theirs = nn.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional,
                     batch_first=batch_first, bias=bias, proj_size=P, dtype=dtype)
    return lstm_ext.LSTM.from_torch(theirs), theirs


def run_both(ours, theirs, x, hx, tol):
    """Outputs, states and the gradients of a random weighting of them, w.r.t.
    the input, the initial state and every parameter, compared."""
    leaves = [[t.clone().requires_grad_() for t in [x] + list(hx or [])] for _ in range(2)]
    results = []
    for m, (xi, *state) in zip((ours, theirs), leaves):
        out, (h, c) = m(xi, tuple(state) if state else None)
        results.append((out, h, c))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **tol)
    w = [torch.randn_like(t) for t in results[1]]
    for m, res, lv in zip((ours, theirs), results, leaves):
        m.zero_grad()
        sum((r * k).sum() for r, k in zip(res, w)).backward()
    for a, b in zip(*leaves):
        torch.testing.assert_close(a.grad, b.grad, **tol)
    mine = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        torch.testing.assert_close(mine[name].grad, p.grad, **tol, msg=name)


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,with_state", GRID)
def test_parity_with_nn_lstm_float64(num_layers, bidirectional, batch_first, bias, with_state):
    ours, theirs = pair(num_layers, bidirectional, batch_first, bias)
    dirs = 2 if bidirectional else 1
    x = torch.randn(B, T, I, dtype=torch.float64) if batch_first else \
        torch.randn(T, B, I, dtype=torch.float64)
    hx = None
    if with_state:
        hx = (torch.randn(num_layers * dirs, B, P, dtype=torch.float64),
              torch.randn(num_layers * dirs, B, H, dtype=torch.float64))
    run_both(ours, theirs, x, hx, F64)


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
def test_parity_float32(num_layers, bidirectional):
    ours, theirs = pair(num_layers, bidirectional, dtype=torch.float32)
    run_both(ours, theirs, torch.randn(T, B, I), None, F32)


@pytest.mark.parametrize("num_layers,bidirectional,enforce_sorted",
                         [(1, False, True), (2, True, False), (3, True, True)])
def test_packed_sequence_parity(num_layers, bidirectional, enforce_sorted):
    ours, theirs = pair(num_layers, bidirectional, batch_first=True)
    lengths = [6, 5, 5, 2] if enforce_sorted else [2, 6, 5, 3]
    x = torch.randn(B, T, I, dtype=torch.float64)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    res = []
    for m, xi in zip((ours, theirs), xs):
        packed = pack_padded_sequence(xi, lengths, batch_first=True,
                                      enforce_sorted=enforce_sorted)
        out, (h, c) = m(packed)
        res.append((out.data, h, c))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, **F64)
    w = [torch.randn_like(t) for t in res[1]]
    for r in res:
        sum((t * k).sum() for t, k in zip(r, w)).backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, **F64)
    mine = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        torch.testing.assert_close(mine[name].grad, p.grad, **F64, msg=name)


def test_unbatched_and_parameters_like_nn_lstm():
    ours, theirs = pair(2, True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert ours.weight_hr_l1_reverse.shape == (P, H)
    assert ours.weight_ih_l1.shape == (4 * H, 2 * P)
    assert len(ours.all_weights[0]) == 5
    assert "proj_size=3" in repr(ours)
    x = torch.randn(T, I, dtype=torch.float64)
    a, (h, c) = ours(x)
    b, (h2, c2) = theirs(x)
    torch.testing.assert_close(a, b, **F64)
    assert h.shape == (4, P) and c.shape == (4, H)


def test_gradcheck_module():
    ours, _ = pair(2, True)
    x = torch.randn(4, 2, I, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ours(t)[0], (x,))


def test_torchscript():
    ours, theirs = pair(2, True, batch_first=True)
    scripted = torch.jit.script(ours)
    x = torch.randn(B, T, I, dtype=torch.float64)
    torch.testing.assert_close(scripted(x)[0], theirs(x)[0], **F64)


@pytest.mark.parametrize("proj_size,message", [
    (7, "proj_size must be smaller than hidden_size"),
    (-1, "proj_size must be an integer >= 0"),
    (1.5, "proj_size must be an integer >= 0"),
])
def test_bad_proj_size(proj_size, message):
    with pytest.raises(ValueError, match=message):
        lstm_ext.LSTM(I, H, proj_size=proj_size)


def test_state_shapes_are_checked():
    ours, _ = pair(1)
    x = torch.randn(T, B, I, dtype=torch.float64)
    h_wrong = torch.zeros(1, B, H, dtype=torch.float64)
    c = torch.zeros(1, B, H, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"expected h_0 of shape \[1, 4, 3\] .*proj_size"):
        ours(x, (h_wrong, c))
    with pytest.raises(ValueError, match=r"expected c_0 of shape \[1, 4, 7\]"):
        ours(x, (torch.zeros(1, B, P, dtype=torch.float64), torch.zeros(1, B, P,
                                                                         dtype=torch.float64)))


def test_op_checks_name_w_hr():
    x = torch.randn(T, B, I, dtype=torch.float64)
    h, c = torch.zeros(B, P, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64)
    w_ih = torch.zeros(4 * H, I, dtype=torch.float64)
    w_hh = torch.zeros(4 * H, P, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"expected w_hr to have dtype Double"):
        lstm_ext.lstm_layer(x, h, c, w_ih, w_hh, w_hr=torch.zeros(P, H))
    with pytest.raises(RuntimeError, match=r"expected w_hh of shape \[28, 2\] "
                                           r"\(4 \* hidden_size, proj_size\)"):
        lstm_ext.lstm_layer(x, h, c, w_ih, w_hh, w_hr=torch.zeros(2, H, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"expected hx of shape \[4, 3\] \(batch, proj_size\)"):
        lstm_ext.lstm_layer(x, c, c, w_ih, w_hh, w_hr=torch.zeros(P, H, dtype=torch.float64))
