"""``QuantizedLSTM``: an LSTM for inference with int8 weights, computed by
``lstm_ext.ops.lstm_layer_int8`` (one C++ op per layer and direction).

Made from a trained ``lstm_ext.LSTM`` or ``torch.nn.LSTM`` by
``lstm_ext.quantize`` (or ``QuantizedLSTM.from_float``); the numerics and the
error bound are stated in ``lstm_ext.quantization``. Same ``forward(input,
hx=None)`` and return value as :class:`torch.nn.LSTM` (batch_first, unbatched
input, PackedSequence in eager mode); float32 input only; no gradient.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import ops
from ._checks import check_supported_device
from ._flat_weights import FlatWeights
from .lstm import LSTM, reverse_padded


def quantize_weight(w: Tensor) -> Tuple[Tensor, Tensor]:
    """``(w_q, scale)``: ``w (N, K)`` as int8, symmetric, per output channel
    (row): ``scale = max_k |w[n, k]| / 127`` (float32; 1 for an all-zero row),
    ``w_q = round(w / scale)`` in [-127, 127], so ``|w - w_q * scale| <= scale / 2``."""
    w64 = w.detach().to(torch.float64)
    amax = w64.abs().amax(dim=1) if w64.shape[1] > 0 else w64.new_zeros(w64.shape[0])
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax)).to(torch.float32)
    q = torch.round(w64 / scale.to(torch.float64).unsqueeze(1)).clamp_(-127, 127)
    return q.to(torch.int8), scale


def check_quantizable(who: str, name: str, w: Tensor) -> None:
    """``w`` must be finite with float32 scales: int8 has no NaN or inf (a NaN
    weight became 0 and the outputs finite where the float LSTM's are NaN; an
    inf weight made a scale of inf and the outputs NaN where the float LSTM's
    are finite), and a float64 weight beyond 127 * FLT_MAX an inf scale."""
    def first(mask):
        return [int(i) for i in mask.nonzero()[0]] if bool(mask.any()) else None

    at = first(~torch.isfinite(w))
    if at is not None:
        raise ValueError(
            f"{who}: expected finite weights, but {name}{at} = {w[tuple(at)].item()}; int8 cannot "
            "carry NaN or inf (torch.nn.LSTM's outputs with it are not what int8 would give): "
            "keep this LSTM in float")
    limit = 127 * torch.finfo(torch.float32).max
    at = first(w.detach().to(torch.float64).abs() > limit)
    if at is not None:
        raise ValueError(
            f"{who}: expected |weights| <= {limit:.3g} (their float32 scales must be finite), "
            f"but {name}{at} = {w[tuple(at)].item():.3g}")


class QuantizedLSTM(FlatWeights, nn.Module):
    r"""A multi-layer LSTM for inference with int8 weights (per output channel)
    and activations quantized dynamically per row and step.

    Buffers per layer ``k`` and direction (suffix ``_reverse``):
    ``weight_ih_l{k}`` (int8, ``(4H, in)``), ``scale_ih_l{k}`` (float32,
    ``(4H,)``), ``weight_hh_l{k}``, ``scale_hh_l{k}``, and with ``bias``
    ``bias_l{k}`` (float32, ``b_ih + b_hh``). Training mode and inputs that
    require grad are refused (there is no backward); dropout does not apply.
    """

    __constants__ = ["input_size", "hidden_size", "num_layers", "bias", "batch_first",
                     "dropout", "bidirectional", "num_directions", "proj_size"]
    # _flat_weights (_flat_weights.py): buffers, five per layer and direction
    # (bias even without one), in the order _run reads them
    _WEIGHT_KINDS = ("weight_ih", "scale_ih", "weight_hh", "scale_hh", "bias")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False) -> None:
        super().__init__()
        if input_size < 0 or hidden_size <= 0 or num_layers < 1:
            raise ValueError(
                "QuantizedLSTM: expected input_size >= 0, hidden_size > 0 and num_layers >= 1, "
                f"but got input_size={input_size}, hidden_size={hidden_size}, "
                f"num_layers={num_layers}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.proj_size = 0
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * self.num_directions
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                for kind, cols in (("ih", layer_input), ("hh", hidden_size)):
                    self.register_buffer(f"weight_{kind}_{name}",
                                         torch.zeros(4 * hidden_size, cols, dtype=torch.int8))
                    self.register_buffer(f"scale_{kind}_{name}",
                                         torch.ones(4 * hidden_size, dtype=torch.float32))
                if bias:
                    self.register_buffer(f"bias_{name}",
                                         torch.zeros(4 * hidden_size, dtype=torch.float32))
        self._flat_weights = []
        self._init_flat_weights()
        self.eval()


    @classmethod
    def from_float(cls, lstm: nn.Module) -> "QuantizedLSTM":
        """A ``QuantizedLSTM`` with the configuration of ``lstm`` (an
        ``lstm_ext.LSTM`` or ``torch.nn.LSTM``, any floating dtype) and its
        weights quantized by ``quantize_weight``; ``lstm`` is left untouched."""
        if not isinstance(lstm, (LSTM, nn.LSTM)):
            raise TypeError("QuantizedLSTM.from_float: expected an lstm_ext.LSTM or a "
                            f"torch.nn.LSTM, but got {type(lstm).__name__}")
        if lstm.proj_size > 0:
            raise ValueError(
                f"QuantizedLSTM.from_float: LSTMs with projections (proj_size={lstm.proj_size}) "
                "are not supported by the int8 layer; quantize a model without proj_size")
        p = next(lstm.parameters())
        if p.device.type != "cpu":
            raise ValueError(f"QuantizedLSTM.from_float: the int8 kernels run on the cpu only, "
                             f"but the LSTM is on {p.device}; move it with .cpu() first")
        q = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias,
                lstm.batch_first, lstm.dropout, lstm.bidirectional)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                for suffix in q._suffixes():
                    name = f"l{layer}{suffix}"
                    for kind in ("ih", "hh"):
                        w = getattr(lstm, f"weight_{kind}_{name}")
                        check_quantizable("QuantizedLSTM.from_float", f"weight_{kind}_{name}", w)
                        w_q, scale = quantize_weight(w)
                        getattr(q, f"weight_{kind}_{name}").copy_(w_q)
                        getattr(q, f"scale_{kind}_{name}").copy_(scale)
                    if lstm.bias:
                        b = (getattr(lstm, f"bias_ih_{name}").double()
                             + getattr(lstm, f"bias_hh_{name}").double())
                        if bool((torch.isfinite(b) & ~torch.isfinite(b.float())).any()):
                            raise ValueError(
                                "QuantizedLSTM.from_float: expected bias_ih + bias_hh of "
                                f"layer {name} within float32's range, but it reaches "
                                f"{b.abs().max().item():.3g}")
                        getattr(q, f"bias_{name}").copy_(b.float())
        return q

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + ", int8 weights"

    # The wrappers of torch.nn.LSTM's calling conventions (PackedSequence,
    # unbatched, batch_first) are lstm_ext.LSTM's own, compiled here against
    # this class's _run (in TorchScript too).
    forward = LSTM.forward
    _forward_packed = LSTM._forward_packed
    _forward_tensor = LSTM._forward_tensor

    def _run(self, x: Tensor, hx: Optional[Tuple[Tensor, Tensor]], lengths: Optional[Tensor],
             batched: bool) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """The layers over a time-major ``x (T, B, input_size)``."""
        who = "QuantizedLSTM"
        w0 = self._flat_weights[0]
        assert w0 is not None
        check_supported_device(who, w0)
        if self.training:
            raise RuntimeError(f"{who}: is for inference only (int8 weights, no gradient, no "
                               "dropout), but the module is in training mode; call .eval()")
        if x.dtype != torch.float32:
            raise TypeError(f"{who}: expected input to have dtype torch.float32, but got "
                            f"{x.dtype}; convert the input with .float()")
        wants_grad = x.requires_grad
        if hx is not None:
            wants_grad = wants_grad or hx[0].requires_grad or hx[1].requires_grad
        if torch.is_grad_enabled() and wants_grad:
            raise RuntimeError(f"{who}: is for inference only (int8 weights, no gradient), but "
                               "the input or the state requires grad; run it under "
                               "torch.no_grad() or detach() them")
        steps, batch = x.shape[0], x.shape[1]
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"{who}: expected input with {self.input_size} features (input_size), "
                f"but got {x.shape[2]} (input shape {list(x.shape)})"
            )
        states = self.num_layers * self.num_directions
        if hx is None:
            h0 = torch.zeros([states, batch, self.hidden_size], dtype=x.dtype, device=x.device)
            c0 = h0
        else:
            h0, c0 = hx
            for name, t in (("h_0", h0), ("c_0", c0)):
                if t.dtype != torch.float32:
                    raise TypeError(f"{who}: expected {name} to have dtype torch.float32, but "
                                    f"got {t.dtype}")
                state = [states, batch, self.hidden_size]
                if batched:
                    layout = "(num_layers * num_directions, batch, hidden_size)"
                    expected, shown = state, list(t.shape)
                else:
                    layout = "(num_layers * num_directions, hidden_size) for unbatched input"
                    expected, shown = [states, self.hidden_size], [t.shape[0]] + list(t.shape[2:])
                if list(t.shape) != state:
                    raise ValueError(
                        f"{who}: expected {name} of shape {expected} {layout}, but got {shown}"
                    )
        if steps == 0:
            raise ValueError(f"{who}: expected a sequence of at least one step, but got seq_len=0")
        h_n: List[Tensor] = []
        c_n: List[Tensor] = []
        layer_input = x
        for layer in range(self.num_layers):
            outputs: List[Tensor] = []
            for direction in range(self.num_directions):
                idx = layer * self.num_directions + direction
                w_ih, s_ih = self._flat_weights[5 * idx], self._flat_weights[5 * idx + 1]
                w_hh, s_hh = self._flat_weights[5 * idx + 2], self._flat_weights[5 * idx + 3]
                assert w_ih is not None and s_ih is not None
                assert w_hh is not None and s_hh is not None
                seq = layer_input if direction == 0 else reverse_padded(layer_input, lengths)
                out, hy, cy = ops.lstm_layer_int8(seq, h0[idx], c0[idx], w_ih, s_ih, w_hh, s_hh,
                                                  self._flat_weights[5 * idx + 4], lengths)
                outputs.append(out if direction == 0 else reverse_padded(out, lengths))
                h_n.append(hy)
                c_n.append(cy)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
        return layer_input, (torch.stack(h_n), torch.stack(c_n))
