"""lstm_ext.quantize and QuantizedLSTM: against the float32 modules within the
stated bound (lstm_ext.quantization.MODULE_BOUND), torch.nn.LSTM's calling
conventions, LSTMModel, refusals, state dicts, TorchScript and .pt2."""
import copy
import os

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstm_ext
from lstm_ext.nn import QuantizedLSTM
from lstm_ext.quantization import MODULE_BOUND


def max_error(a, b):
    return (a - b).abs().max().item()


CONFIGS = [
    dict(input_size=8, hidden_size=16),
    dict(input_size=5, hidden_size=37, num_layers=2, bidirectional=True),
    dict(input_size=12, hidden_size=24, num_layers=3, batch_first=True, bias=False),
    dict(input_size=64, hidden_size=64, num_layers=2, batch_first=True, dropout=0.3),
]


@pytest.mark.parametrize("kind", ["lstm_ext", "torch"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_quantized_close_to_float(kind, config):
    torch.manual_seed(0)
    float_lstm = (lstm_ext.LSTM if kind == "lstm_ext" else nn.LSTM)(**config).eval()
    before = copy.deepcopy(float_lstm.state_dict())
    q = lstm_ext.quantize(float_lstm)
    assert isinstance(q, QuantizedLSTM) and not q.training
    for k, v in float_lstm.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    layers = config.get("num_layers", 1) * (2 if config.get("bidirectional") else 1)
    shape = (6, 30, config["input_size"]) if config.get("batch_first") else \
        (30, 6, config["input_size"])
    x = torch.randn(shape)
    h0 = torch.randn(layers, 6, config["hidden_size"]) * 0.5
    c0 = torch.randn(layers, 6, config["hidden_size"])
    with torch.no_grad():
        for hx in (None, (h0, c0)):
            out, (h, c) = q(x, hx)
            want, (want_h, want_c) = float_lstm(x, hx)
            assert out.shape == want.shape and h.shape == want_h.shape
            assert max_error(out, want) <= MODULE_BOUND
            assert max_error(h, want_h) <= MODULE_BOUND
            assert max_error(c, want_c) <= 2 * MODULE_BOUND
    assert not out.requires_grad


def test_unbatched_and_packed():
    torch.manual_seed(1)
    float_lstm = nn.LSTM(6, 20, num_layers=2, bidirectional=True).eval()
    q = lstm_ext.quantize(float_lstm)
    with torch.no_grad():
        x = torch.randn(9, 6)
        out, (h, c) = q(x)
        want, (want_h, want_c) = float_lstm(x)
        assert out.shape == want.shape and h.shape == want_h.shape == (4, 20)
        assert max_error(out, want) <= MODULE_BOUND
        padded = torch.randn(9, 4, 6)
        lengths = torch.tensor([3, 9, 5, 1])
        packed = pack_padded_sequence(padded, lengths, enforce_sorted=False)
        out_p, (h, c) = q(packed)
        want_p, (want_h, want_c) = float_lstm(packed)
        assert torch.equal(out_p.batch_sizes, want_p.batch_sizes)
        out_pad, _ = pad_packed_sequence(out_p)
        want_pad, _ = pad_packed_sequence(want_p)
        assert max_error(out_pad, want_pad) <= MODULE_BOUND
        assert max_error(h, want_h) <= MODULE_BOUND
        # each row as its own sequence gives the same result as in the batch
        for b, n in enumerate(lengths.tolist()):
            alone, _ = q(padded[:n, b])
            torch.testing.assert_close(out_pad[:n, b], alone, atol=1e-6, rtol=0)


def test_lstm_model_quantizes_and_streams():
    torch.manual_seed(2)
    model = lstm_ext.LSTMModel(3, 16, 2, num_layers=2).eval()
    q = lstm_ext.quantize(model)
    assert isinstance(q.lstm, QuantizedLSTM) and isinstance(q.fc, nn.Linear)
    assert q.fc.weight.dtype == torch.float32 and q.fc.weight is not model.fc.weight
    assert isinstance(model.lstm, lstm_ext.LSTM)  # the original is untouched
    x = torch.randn(5, 12, 3)
    with torch.no_grad():
        y = q(x)
        assert max_error(y, model(x)) <= MODULE_BOUND * (1 + model.fc.weight.abs().sum(1).max())
        state = None
        for t in range(12):
            pred, state = q.step(x[:, t], state)
        torch.testing.assert_close(pred, y, atol=1e-6, rtol=0)


def test_refusals():
    with pytest.raises(ValueError, match="proj_size=4"):
        lstm_ext.quantize(nn.LSTM(3, 8, proj_size=4))
    with pytest.raises(ValueError, match="holds no lstm_ext.LSTM or torch.nn.LSTM"):
        lstm_ext.quantize(nn.Sequential(nn.Linear(2, 2)))
    q = lstm_ext.quantize(nn.LSTM(3, 8))
    x = torch.randn(4, 2, 3)
    with pytest.raises(RuntimeError, match="QuantizedLSTM: is for inference only .* training "
                                           "mode; call .eval()"):
        q.train()(x)
    q.eval()
    with pytest.raises(RuntimeError, match="QuantizedLSTM: is for inference only .* requires grad"):
        q(x.requires_grad_())
    with pytest.raises(TypeError, match="expected input to have dtype torch.float32"):
        q(x.detach().double())
    with pytest.raises(ValueError, match=r"expected h_0 of shape \[1, 2, 8\]"):
        q(x.detach(), (torch.zeros(1, 3, 8), torch.zeros(1, 2, 8)))
    out, _ = q(x.detach())  # grad mode on, nothing requires grad: fine
    assert not out.requires_grad


@pytest.mark.parametrize("name, at, value, message", [
    ("weight_ih_l0", (2, 1), float("nan"), r"expected finite weights, but weight_ih_l0\[2, 1\] = nan"),
    ("weight_hh_l0", (5, 3), float("-inf"), r"expected finite weights, but weight_hh_l0\[5, 3\] = -inf"),
    ("weight_hh_l0", (1, 1), 1e300, r"expected \|weights\| <= 4.32e\+40 .* weight_hh_l0\[1, 1\] = 1e\+300"),
    ("bias_hh_l0", (3,), 1e300, "expected bias_ih \\+ bias_hh of layer l0 within float32's range"),
], ids=["nan", "inf", "scale_overflow", "bias_overflow"])
def test_weights_int8_cannot_carry_are_refused(name, at, value, message):
    """A NaN weight became 0 (finite outputs where the float LSTM's are NaN),
    an inf one an inf scale (NaN outputs where the float LSTM's are finite)."""
    model = nn.LSTM(3, 8).double()
    with torch.no_grad():
        getattr(model, name)[at] = value
    with pytest.raises(ValueError, match="QuantizedLSTM.from_float: " + message):
        lstm_ext.quantize(model)


def test_an_lstm_held_under_two_names_is_quantized_under_both():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.LSTM(3, 8)
            self.b = self.a
            self.head = nn.Sequential(nn.LSTM(8, 8))

    q = lstm_ext.quantize(Shared())
    assert isinstance(q.a, QuantizedLSTM) and q.b is q.a
    assert isinstance(q.head[0], QuantizedLSTM)


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(3)
    q = lstm_ext.quantize(nn.LSTM(5, 12, num_layers=2, bidirectional=True, batch_first=True))
    keys = set(q.state_dict())
    assert {"weight_ih_l0", "scale_ih_l0", "weight_hh_l1_reverse", "bias_l1"} <= keys
    assert q.weight_ih_l0.dtype == torch.int8
    path = tmp_path / "q.pt"
    torch.save(q.state_dict(), path)
    fresh = QuantizedLSTM(5, 12, num_layers=2, bidirectional=True, batch_first=True)
    fresh.load_state_dict(torch.load(path))
    x = torch.randn(3, 7, 5)
    with torch.no_grad():
        assert torch.equal(fresh(x)[0], q(x)[0])


def test_torchscript(tmp_path):
    torch.manual_seed(4)
    model = lstm_ext.quantize(lstm_ext.LSTMModel(3, 16, 2, num_layers=2))
    lstm = lstm_ext.quantize(nn.LSTM(4, 10, bidirectional=True, batch_first=True))
    x3, x4 = torch.randn(5, 9, 3), torch.randn(2, 6, 4)
    for module, x in ((model, x3), (lstm, x4)):
        scripted = torch.jit.script(module)
        path = str(tmp_path / "m.pt")
        torch.jit.save(scripted, path)
        loaded = torch.jit.load(path)
        with torch.no_grad():
            want = module(x)
            for m in (scripted, loaded):
                got = m(x)
                if isinstance(want, tuple):
                    assert torch.equal(got[0], want[0]) and torch.equal(got[1][0], want[1][0])
                else:
                    assert torch.equal(got, want)
    with torch.no_grad():
        pred, state = torch.jit.script(model).step(x3[:, 0], None)
        assert torch.equal(pred, model.step(x3[:, 0], None)[0])
    with pytest.raises(torch.jit.Error, match="requires grad"):
        torch.jit.script(lstm)(x4.requires_grad_())


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="an AOTInductor compile under the sanitizers (make test-sanitize) is "
                           "slow and tests the compiler, not the op")
def test_pt2(tmp_path):
    """One AOTInductor compile: the quantized LSTMModel's forward."""
    from lstm_ext.export import export_pt2, load_pt2
    torch.manual_seed(5)
    model = lstm_ext.quantize(lstm_ext.LSTMModel(2, 16, 3, num_layers=2))
    path = export_pt2(model, str(tmp_path / "q.pt2"), step=False, max_steps=500)
    loaded = load_pt2(path)
    assert "lstm_ext::lstm_layer_forward_int8" in loaded.metadata["lstm_ext.ops"]
    with torch.no_grad():
        for batch, steps in ((1, 5), (7, 40)):
            x = torch.randn(batch, steps, 2)
            torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=0)
