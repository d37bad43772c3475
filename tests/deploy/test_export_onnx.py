"""ONNX export (lstm_ext.export.export_onnx): the layer op as standard ONNX LSTM
operators, run by onnxruntime, equal to eager to 1e-5 in float32 over layers
1-3, both directions, both layouts, at batch sizes and lengths other than the
traced ones; what ONNX cannot express is refused before a file is written."""
import inspect

import numpy as np
import pytest
import torch

import lstm_ext
from lstm_ext.export import ExportError, export_onnx
from lstm_ext.forecast import artifacts
from lstm_ext.forecast.forecaster import Forecaster

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

TOL = 1e-5


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def ops_in(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_lstm_parity_grid(tmp_path, num_layers, bidirectional, batch_first):
    torch.manual_seed(num_layers)
    lstm = lstm_ext.LSTM(5, 7, num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=batch_first, dropout=0.25)  # eval: no dropout
    path = export_onnx(lstm, tmp_path / "lstm.onnx", output_names=["output", "h_n", "c_n"])
    assert lstm.training, "the module's mode is restored"
    assert ops_in(path).count("LSTM") == num_layers * (2 if bidirectional else 1)
    assert "lstm_ext" not in str(onnx.load(str(path)).opset_import)
    s = session(path)
    axes = ["batch", "steps", 5] if batch_first else ["steps", "batch", 5]
    assert s.get_inputs()[0].shape == axes
    lstm.eval()
    for batch, steps in [(3, 4), (1, 9), (6, 1), (2, 17)]:  # dynamic batch and sequence
        x = torch.randn((batch, steps, 5) if batch_first else (steps, batch, 5))
        got = s.run(None, {"x": x.numpy()})
        with torch.no_grad():
            out, (h_n, c_n) = lstm(x)
        for name, g, e in zip(("output", "h_n", "c_n"), got, (out, h_n, c_n)):
            assert g.shape == tuple(e.shape), name
            np.testing.assert_allclose(g, e.numpy(), atol=TOL, rtol=0, err_msg=name)


def test_lstm_without_bias(tmp_path):
    torch.manual_seed(0)
    lstm = lstm_ext.LSTM(3, 4, bias=False).eval()
    s = session(export_onnx(lstm, tmp_path / "nobias.onnx"))
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        np.testing.assert_allclose(s.run(None, {"x": x.numpy()})[0], lstm(x)[0].numpy(),
                                   atol=TOL, rtol=0)


def forecasters():
    torch.manual_seed(0)
    yield "plain", Forecaster(lstm_ext.LSTMModel(1, 8, 3, num_layers=2), 0.5, 2.0, 12, 3)
    if "linear" in inspect.signature(Forecaster).parameters:  # the hybrid, where it exists
        shape = Forecaster(lstm_ext.LSTMModel(1, 8, 3), 0.5, 2.0, 12, 3).linear.shape
        yield "hybrid", Forecaster(lstm_ext.LSTMModel(1, 8, 3), 0.5, 2.0, 12, 3,
                                   linear=torch.randn(shape) * 0.1)


def test_model_and_forecaster(tmp_path):
    torch.manual_seed(0)
    modules = [("model", lstm_ext.LSTMModel(2, 6, 3, num_layers=2, bidirectional=True))]
    modules += list(forecasters())
    for name, module in modules:
        module.eval()
        path = export_onnx(module, tmp_path / f"{name}.onnx", metadata={"window": 12})
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert props["lstm_ext.format"] == "lstm_ext.onnx/1" and props["window"] == "12"
        s = session(path)
        size = module.input_size
        for batch in (1, 4):
            x = torch.randn(batch, 12, size) + (300 if size == 1 else 0)
            with torch.no_grad():
                expected = module(x).numpy()
            np.testing.assert_allclose(s.run(None, {"x": x.numpy()})[0], expected,
                                       atol=TOL * max(1, np.abs(expected).max() / 100), rtol=0,
                                       err_msg=name)


class _Projected(torch.nn.Module):
    """Calls the layer op with projection weights, with no proj_size attribute
    to give it away: the graph check must find it."""

    def __init__(self):
        super().__init__()
        self.input_size = 3
        self.w_ih = torch.nn.Parameter(torch.randn(16, 3))
        self.w_hh = torch.nn.Parameter(torch.randn(16, 2))
        self.w_hr = torch.nn.Parameter(torch.randn(2, 4))

    def forward(self, x):
        x = x.transpose(0, 1)
        h = x.new_zeros(x.shape[1], 2)
        c = x.new_zeros(x.shape[1], 4)
        return lstm_ext.ops.lstm_layer(x, h, c, self.w_ih, self.w_hh, None, None, None,
                                       self.w_hr)[0]


def test_refuses_projections(tmp_path):
    if "w_hr" not in inspect.signature(lstm_ext.ops.lstm_layer).parameters:
        pytest.skip("this build has no projections")
    with pytest.raises(ExportError, match="proj"):
        export_onnx(lstm_ext.LSTM(3, 4, proj_size=2), tmp_path / "p.onnx")
    with pytest.raises(ExportError, match="w_hr.*proj_size > 0.*ONNX"):
        export_onnx(_Projected(), tmp_path / "p2.onnx")
    assert not list(tmp_path.iterdir()), "no file is written"


class _ReadsGates(torch.nn.Module):
    input_size = 3

    def __init__(self):
        super().__init__()
        self.w_ih = torch.nn.Parameter(torch.randn(16, 3))
        self.w_hh = torch.nn.Parameter(torch.randn(16, 4))

    def forward(self, x):
        h = x.new_zeros(x.shape[0], 4)
        out, _, _, gates, _ = torch.ops.lstm_ext.lstm_layer_forward(
            x.transpose(0, 1), h, h, self.w_ih, self.w_hh, None, None, None)
        return out.sum(0) + gates.sum(0)[:, :4]


def test_refuses_what_onnx_cannot_express(tmp_path):
    with pytest.raises(ExportError, match="saved activations \\('gates'"):
        export_onnx(_ReadsGates(), tmp_path / "g.onnx")
    with pytest.raises(ExportError, match="input_size"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "l.onnx")
    with pytest.raises(ExportError, match="module: expected a torch.nn.Module"):
        export_onnx("model.pt", tmp_path / "s.onnx")
    # was onnx's own InferenceError, leaving b.onnx.tmp behind
    with pytest.raises(ExportError, match="takes float32 or float64, but the module is "
                                          "torch.bfloat16"):
        export_onnx(lstm_ext.LSTM(3, 4).bfloat16(), tmp_path / "b.onnx")
    assert not list(tmp_path.iterdir())
    # was IsADirectoryError, leaving DIR.tmp beside the directory
    with pytest.raises(ExportError, match="is a directory; give a file name, such as "):
        export_onnx(lstm_ext.LSTM(3, 4), tmp_path)
    assert not (tmp_path.parent / (tmp_path.name + ".tmp")).exists()


def test_forecaster_through_the_applications_writer_and_reader(tmp_path):
    """artifacts.export(..., fmt="onnx") and load_exported: the forecast
    command's way to an ONNX model (run by onnxruntime)."""
    _, forecaster = next(forecasters())
    forecaster.eval()
    meta = {"format": artifacts.MODEL_FORMAT, "window": 12, "horizon": 3, "column": "co2",
            "time_column": None}
    path = artifacts.export(forecaster, meta, str(tmp_path), fmt="onnx")
    assert path.endswith("model.onnx")
    model, loaded = artifacts.load_exported(path)
    assert (model.window, model.horizon) == (12, 3) and loaded["window"] == 12
    x = 300 + torch.randn(2, 12, 1).cumsum(1)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), forecaster(x).numpy(), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="--format tflite: expected one of"):
        artifacts.export(forecaster, meta, str(tmp_path), fmt="tflite")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="bad.onnx"):
        artifacts.load_exported(str(bad))
