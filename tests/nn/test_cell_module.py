"""LSTMCell: the torch.nn.LSTMCell API, state dicts, the tutorial's layout, errors."""
import pytest
import torch
from torch import nn

import lstm_ext
from helpers import TutorialCell
from lstm_ext import reference


def test_parameters_mirror_nn_lstmcell():
    ours, theirs = lstm_ext.LSTMCell(4, 3), nn.LSTMCell(4, 3)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, p.shape) for n, p in theirs.named_parameters()]
    bound = 1 / 3 ** 0.5
    assert all(p.abs().max() <= bound for p in ours.parameters())
    assert [n for n, _ in lstm_ext.LSTMCell(4, 3, bias=False).named_parameters()] == \
        ["weight_ih", "weight_hh"]


def test_hidden_none_means_zeros_and_unbatched_input():
    torch.manual_seed(0)
    cell = lstm_ext.LSTMCell(4, 3)
    x = torch.randn(2, 4)
    zeros = torch.zeros(2, 3)
    torch.testing.assert_close(cell(x), cell(x, (zeros, zeros)))
    h, c = cell(x[0])
    assert h.shape == (3,) and c.shape == (3,)
    torch.testing.assert_close(h, cell(x[:1])[0][0])
    h1, c1 = cell(x[0], (h, c))
    assert h1.shape == (3,)


def test_tutorial_demo_shapes():
    cell = lstm_ext.LSTMCell(4, 3)
    h, c = torch.zeros(1, 3), torch.zeros(1, 3)
    for x in torch.randn(5, 1, 4):
        h, c = cell(x, (h, c))
    assert h.shape == (1, 3) and c.shape == (1, 3)


def test_tutorial_state_dict_loads_with_identical_outputs():
    torch.manual_seed(0)
    tutorial = TutorialCell(4, 3)
    cell = lstm_ext.LSTMCell(4, 3)
    cell.load_state_dict(tutorial.state_dict())
    x, h, c = torch.randn(5, 4), torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(cell(x, (h, c)), tutorial(x, (h, c)), atol=2e-6, rtol=1e-5)


def test_tutorial_state_dict_of_wrong_size_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"Wi.weight of shape \[3, 7\]"):
        lstm_ext.LSTMCell(4, 3).load_state_dict(TutorialCell(5, 3).state_dict())


def test_nn_lstmcell_state_dict_round_trip():
    theirs = nn.LSTMCell(4, 3)
    ours = lstm_ext.LSTMCell(4, 3)
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())


def test_module_matches_reference_float64():
    cell = lstm_ext.LSTMCell(6, 9, dtype=torch.float64)
    x, h, c = (torch.randn(4, n, dtype=torch.float64) for n in (6, 9, 9))
    expected = reference.lstm_cell(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih,
                                   cell.bias_hh)
    torch.testing.assert_close(cell(x, (h, c)), expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("call,exc,message", [
    (lambda m: m(torch.randn(2, 5)), ValueError, r"input of shape \[2, 4\] \(batch, input_size\), but got \[2, 5\]"),
    (lambda m: m(torch.randn(2, 3, 4)), ValueError, r"\(batch, input_size\) or \(input_size,\)"),
    (lambda m: m(torch.randn(2, 4, dtype=torch.float64)), TypeError, "dtype torch.float32"),
    (lambda m: m(torch.randint(0, 3, (2, 4))), TypeError, "but got torch.int64"),
    (lambda m: m(torch.randn(2, 4), (torch.zeros(2, 4), torch.zeros(2, 3))), ValueError,
     r"hx\[0\] of shape \[2, 3\]"),
    (lambda m: m(torch.randn(2, 4), (torch.zeros(2, 3), torch.zeros(1, 3))), ValueError,
     r"hx\[1\] of shape \[2, 3\]"),
    (lambda m: m(torch.randn(2, 4, device="meta")), ValueError, "on cpu"),
])
def test_bad_input(call, exc, message):
    with pytest.raises(exc, match=message):
        call(lstm_ext.LSTMCell(4, 3))


def test_unsupported_device_is_named():
    """This build has no CUDA to make a real CUDA tensor; the check reads only
    .device, so a stand-in shows the message a CUDA user gets."""
    from types import SimpleNamespace

    from lstm_ext.nn._checks import check_supported_device
    with pytest.raises(ValueError, match="run on the cpu only, but the parameters are on cuda:0"):
        check_supported_device("LSTMCell", SimpleNamespace(device=torch.device("cuda:0")))


def test_meta_device_gives_shapes_only():
    cell = lstm_ext.LSTMCell(4, 3).to("meta")
    h, c = cell(torch.randn(2, 4, device="meta"))
    assert h.shape == (2, 3) and h.device.type == "meta"


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_size > 0"):
        lstm_ext.LSTMCell(4, 0)
