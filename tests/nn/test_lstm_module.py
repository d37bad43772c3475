"""lstm_ext.LSTM against torch.nn.LSTM with copied weights, over the option grid."""
import itertools

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_ext
from helpers import F32

GRID = list(itertools.product([1, 2, 3], [False, True], [False, True], [True, False],
                              [False, True]))


def pair(num_layers=1, bidirectional=False, batch_first=False, bias=True, dtype=torch.float32,
         **kw):
    torch.manual_seed(0)
    theirs = nn.LSTM(5, 6, num_layers=num_layers, bidirectional=bidirectional,
                     batch_first=batch_first, bias=bias, dtype=dtype, **kw)
    return lstm_ext.LSTM.from_torch(theirs), theirs


def assert_same_grads(ours, theirs, tol):
    mine = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        torch.testing.assert_close(mine[name].grad, p.grad, **tol, msg=name)


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,with_state", GRID)
def test_parity_with_nn_lstm(num_layers, bidirectional, batch_first, bias, with_state):
    ours, theirs = pair(num_layers, bidirectional, batch_first, bias)
    dirs = 2 if bidirectional else 1
    x = torch.randn(3, 7, 5) if batch_first else torch.randn(7, 3, 5)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    hx1 = hx2 = None
    if with_state:
        h0, c0 = torch.randn(num_layers * dirs, 3, 6), torch.randn(num_layers * dirs, 3, 6)
        hx1 = (h0.clone().requires_grad_(), c0.clone().requires_grad_())
        hx2 = (h0.clone().requires_grad_(), c0.clone().requires_grad_())
    out1, (h1, c1) = ours(x1, hx1)
    out2, (h2, c2) = theirs(x2, hx2)
    for a, b in ((out1, out2), (h1, h2), (c1, c2)):
        torch.testing.assert_close(a, b, **F32)
    w = [torch.randn_like(t) for t in (out2, h2, c2)]
    sum((a * k).sum() for a, k in zip((out1, h1, c1), w)).backward()
    sum((a * k).sum() for a, k in zip((out2, h2, c2), w)).backward()
    torch.testing.assert_close(x1.grad, x2.grad, **F32)
    if with_state:
        torch.testing.assert_close(hx1[0].grad, hx2[0].grad, **F32)
        torch.testing.assert_close(hx1[1].grad, hx2[1].grad, **F32)
    assert_same_grads(ours, theirs, F32)


@pytest.mark.parametrize("num_layers,bidirectional,enforce_sorted",
                         [(1, False, True), (2, True, False), (3, True, True), (1, True, False)])
def test_packed_sequence_parity(num_layers, bidirectional, enforce_sorted):
    ours, theirs = pair(num_layers, bidirectional, batch_first=True)
    lengths = [7, 5, 5, 2] if enforce_sorted else [2, 7, 5, 3]
    x = torch.randn(4, 7, 5)
    dirs = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * dirs, 4, 6)
    c0 = torch.randn(num_layers * dirs, 4, 6)
    results = []
    for model in (ours, theirs):
        xi = x.clone().requires_grad_()
        packed = pack_padded_sequence(xi, lengths, batch_first=True,
                                      enforce_sorted=enforce_sorted)
        out, (h, c) = model(packed, (h0, c0))
        assert isinstance(out, type(packed))
        padded, out_lengths = pad_packed_sequence(out, batch_first=True)
        (padded.square().sum() + h.sum() + 2 * c.sum()).backward()
        results.append((padded, out_lengths, h, c, xi.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **F32)
    assert_same_grads(ours, theirs, F32)


# batch_sizes that pack_padded_sequence never makes: torch's
# pad_packed_sequence trusts them, and the first two aborted the process
# ("munmap_chunk(): invalid pointer") before the modules checked them.
BAD_BATCH_SIZES = [
    ([3, 3, -2, 3, 4], "batch_sizes[2] = -2 after 3"),
    ([3, 0, 2, 1, 1, 1, 3], "batch_sizes[1] = 0 after 3"),
    ([3, 3, 2, 2], "sum to the 11 rows of its data, but they sum to 10"),
    ([2, 3, 3, 3], "batch_sizes[1] = 3 after 2"),
    (torch.tensor([4, 4, 3], dtype=torch.int32), "int64 tensor on the cpu, but got shape [3], "
                                                 "torch.int32"),
    (torch.tensor([[11]]), "but got shape [1, 1]"),
]


@pytest.mark.parametrize("module", ["LSTM", "QuantizedLSTM"])
@pytest.mark.parametrize("batch_sizes,message", BAD_BATCH_SIZES)
def test_packed_sequence_with_bad_batch_sizes_is_refused(module, batch_sizes, message):
    from torch.nn.utils.rnn import PackedSequence
    model = lstm_ext.LSTM(3, 4)
    if module == "QuantizedLSTM":
        model = lstm_ext.quantize(model)
    packed = PackedSequence(torch.randn(11, 3), torch.as_tensor(batch_sizes))
    with pytest.raises(ValueError, match=f"^{module}: expected PackedSequence.batch_sizes") as e:
        model(packed)
    assert message in str(e.value)


def test_unbatched_input():
    ours, theirs = pair(2, True)
    x = torch.randn(7, 5)
    h0, c0 = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(ours(x, (h0, c0)), theirs(x, (h0, c0)), **F32)
    torch.testing.assert_close(ours(x), theirs(x), **F32)


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (1, True), (2, False)])
@pytest.mark.parametrize("batched", [True, False])
def test_final_states_detach_in_place_like_nn_lstm(num_layers, bidirectional, batched):
    """h_n and c_n, batched, are no views, as torch.nn.LSTM's are not:
    truncated backpropagation through time calls detach_() on them, which
    views refuse. (Unbatched, both return views: squeeze.)"""
    ours, theirs = pair(num_layers, bidirectional)
    x = torch.randn(4, 3, 5) if batched else torch.randn(4, 5)
    for module in (ours, theirs):
        _, (h_n, c_n) = module(x)
        assert (h_n._is_view(), c_n._is_view()) == (not batched, not batched)
        if batched:
            h_n.detach_()
            c_n.detach_()
            assert not h_n.requires_grad and not c_n.requires_grad


def test_float64_tight():
    ours, theirs = pair(2, True, dtype=torch.float64)
    x = torch.randn(5, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-12, rtol=1e-12)


def test_state_dict_round_trip_and_names():
    ours, theirs = pair(2, True, bias=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    fresh = lstm_ext.LSTM(5, 6, num_layers=2, bidirectional=True)
    fresh.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 2, 5)
    torch.testing.assert_close(fresh(x), theirs(x), **F32)


def test_dropout_train_vs_eval_and_seeded():
    model = lstm_ext.LSTM(5, 6, num_layers=3, dropout=0.5)
    x = torch.randn(4, 2, 5)
    model.train()
    torch.manual_seed(1)
    a = model(x)[0]
    torch.manual_seed(1)
    b = model(x)[0]
    c = model(x)[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    no_dropout = lstm_ext.LSTM(5, 6, num_layers=3)
    no_dropout.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x)[0], no_dropout(x)[0])


@pytest.mark.parametrize("kwargs, exc, message", [
    (dict(hidden_size=6.0), TypeError, "LSTM: hidden_size must be an integer, but got float 6.0"),
    (dict(input_size="5"), TypeError, "LSTM: input_size must be an integer, but got str '5'"),
    (dict(num_layers=True), TypeError, "LSTM: num_layers must be an integer, but got bool True"),
    (dict(num_layers=2, dropout=True), ValueError, "dropout must be a number in .0, 1., but got True"),
])
def test_bad_constructor_arguments_like_nn_lstm(kwargs, exc, message):
    """torch.nn.LSTM refuses each of these too; a float size failed inside
    torch.empty, and dropout=True was taken as 1."""
    with pytest.raises(exc, match=message):
        lstm_ext.LSTM(**{"input_size": 5, "hidden_size": 6, **kwargs})


def test_zero_batch_like_nn_lstm():
    ours, theirs = pair()
    x = torch.randn(3, 0, 5)
    a, b = ours(x), theirs(x)
    assert a[0].shape == b[0].shape and a[1][0].shape == b[1][0].shape


def test_zero_length_sequence_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one step"):
        lstm_ext.LSTM(5, 6)(torch.randn(0, 3, 5))


@pytest.mark.parametrize("call,exc,message", [
    (lambda m: m(torch.randn(7, 3, 4)), ValueError, r"expected input with 5 features \(input_size\), but got 4"),
    (lambda m: m(torch.randn(7, 3, 5), (torch.zeros(2, 3, 6), torch.zeros(1, 3, 6))), ValueError,
     r"expected h_0 of shape \[1, 3, 6\]"),
    (lambda m: m(torch.randn(7, 3, 5), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 7))), ValueError,
     r"expected c_0 of shape \[1, 3, 6\]"),
    (lambda m: m(torch.randn(7, 5), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6))), ValueError,
     r"h_0 of shape \[1, 6\]"),
    (lambda m: m(torch.randn(7, 3, 5, dtype=torch.float64)), TypeError, "dtype torch.float32"),
    (lambda m: m(torch.randn(5)), ValueError, r"\(seq_len, batch, input_size\)"),
    (lambda m: m(torch.randn(7, 3, 5), torch.zeros(1, 3, 6)), TypeError,
     r"^LSTM: expected hx as a tuple \(h_0, c_0\), but got Tensor$"),
    (lambda m: m(torch.randn(7, 3, 5), (torch.zeros(1, 3, 6),)), TypeError,
     r"but got tuple of length 1$"),
])
def test_bad_input(call, exc, message):
    with pytest.raises(exc, match=message):
        call(lstm_ext.LSTM(5, 6))


def test_torch_compile_traces_the_ops():
    """The fake kernels let torch.compile trace the C++ ops (forward and backward)."""
    torch.manual_seed(0)
    model = lstm_ext.LSTM(5, 6, num_layers=2)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(7, 3, 5, requires_grad=True)
    torch.testing.assert_close(compiled(x), model(x))
    compiled(x)[0].sum().backward()
    assert x.grad is not None and model.weight_hh_l1.grad is not None
