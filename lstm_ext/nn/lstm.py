"""``LSTM``: a drop-in for ``torch.nn.LSTM`` running lstm_ext's C++ layer op.

Each layer and direction is one call of ``ops.lstm_layer`` (the whole sequence
in one C++ op, ``torch.ops.lstm_ext.lstm_layer_forward``, with a fused backward
through time; ``lstm_layer_inference`` when no gradient can be asked for).
Layers, directions, dropout, batch_first, unbatched input and PackedSequence
are composed here, exactly as ``torch.nn.LSTM`` defines them.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import ops
from ._checks import check_batch_sizes, check_float_like, check_supported_device
from ._flat_weights import FlatWeights


def reverse_padded(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverses each row of a time-major ``x (T, B, ...)`` within its own length;
    padded steps stay where they are."""
    if lengths is None:
        return x.flip(0)
    t = torch.arange(x.shape[0]).unsqueeze(1)
    lens = lengths.unsqueeze(0)
    index = torch.where(t < lens, lens - 1 - t, t).to(x.device)
    return x.gather(0, index.unsqueeze(2).expand_as(x))


class LSTM(FlatWeights, nn.Module):
    r"""Applies a multi-layer LSTM, computed by lstm_ext's C++ kernels.

    Same constructor, parameter names and shapes (``weight_ih_l{k}[_reverse]``,
    ``weight_hh_l{k}[_reverse]``, ``bias_ih_l{k}[_reverse]``,
    ``bias_hh_l{k}[_reverse]``), initialisation, ``forward(input, hx=None)`` and
    return value ``(output, (h_n, c_n))`` as :class:`torch.nn.LSTM`, including
    unbatched input and :class:`~torch.nn.utils.rnn.PackedSequence`. Switch by
    changing the import, or convert a trained module with :meth:`from_torch`.
    ``proj_size > 0`` gives an LSTM with projections (``weight_hr_l{k}``, h of
    ``proj_size`` features, c of ``hidden_size``), as in :class:`torch.nn.LSTM`.
    """

    __constants__ = ["input_size", "hidden_size", "num_layers", "bias", "batch_first",
                     "dropout", "bidirectional", "num_directions", "proj_size"]
    __jit_unused_properties__ = ["all_weights"]
    # _flat_weights (_flat_weights.py): five per layer and direction (bias and
    # projection entries even without them), in the order _run reads them
    _WEIGHT_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None,
                 dtype=None) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"LSTM: {name} must be an integer, but got "
                                f"{type(value).__name__} {value!r}")
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(
                f"LSTM: proj_size must be an integer >= 0 (0: no projection), but got {proj_size!r}"
            )
        if proj_size >= hidden_size:
            raise ValueError(
                f"LSTM: proj_size must be smaller than hidden_size, but got proj_size={proj_size} "
                f"and hidden_size={hidden_size}"
            )
        if input_size < 0 or hidden_size <= 0 or num_layers < 1:
            raise ValueError(
                "LSTM: expected input_size >= 0, hidden_size > 0 and num_layers >= 1, but got "
                f"input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}"
            )
        # bool is an int to isinstance; torch.nn.LSTM refuses dropout=True too
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or \
                not 0 <= dropout <= 1:
            raise ValueError(f"LSTM: dropout must be a number in [0, 1], but got {dropout!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.proj_size = proj_size
        out_size = proj_size if proj_size > 0 else hidden_size  # the size of h
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else out_size * self.num_directions
            for suffix in self._suffixes():
                name = f"l{layer}{suffix}"
                self.register_parameter(
                    "weight_ih_" + name,
                    nn.Parameter(torch.empty(4 * hidden_size, layer_input, **factory)))
                self.register_parameter(
                    "weight_hh_" + name,
                    nn.Parameter(torch.empty(4 * hidden_size, out_size, **factory)))
                if bias:
                    self.register_parameter(
                        "bias_ih_" + name, nn.Parameter(torch.empty(4 * hidden_size, **factory)))
                    self.register_parameter(
                        "bias_hh_" + name, nn.Parameter(torch.empty(4 * hidden_size, **factory)))
                if proj_size > 0:
                    self.register_parameter(
                        "weight_hr_" + name,
                        nn.Parameter(torch.empty(proj_size, hidden_size, **factory)))
        self._flat_weights = []
        self._init_flat_weights()
        self.reset_parameters()

    @classmethod
    def from_torch(cls, lstm: nn.LSTM) -> "LSTM":
        """An ``lstm_ext.LSTM`` with the configuration and weights of ``lstm``."""
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"LSTM.from_torch: expected a torch.nn.LSTM, but got {type(lstm).__name__}")
        p = next(lstm.parameters())
        ours = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias,
                   lstm.batch_first, lstm.dropout, lstm.bidirectional, lstm.proj_size,
                   device=p.device, dtype=p.dtype)
        ours.load_state_dict(lstm.state_dict())
        ours.train(lstm.training)
        return ours

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch.nn.LSTM."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op, for code written for torch.nn.LSTM (which needs it on cuDNN)."""

    @property
    def all_weights(self) -> List[List[Tensor]]:
        kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        kinds += ["weight_hr"] if self.proj_size > 0 else []
        return [[getattr(self, n + "_" + f"l{layer}{s}") for n in kinds]
                for layer in range(self.num_layers) for s in self._suffixes()]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        return s

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        # `input` may also be a PackedSequence in eager mode (scripted modules
        # take tensors only, like scripted torch.nn.LSTM's tensor overload).
        if not torch.jit.is_scripting():
            # torch.nn.LSTM takes hx as a tuple (h_0, c_0); one tensor failed
            # to unpack with Python's own words
            if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
                raise TypeError(f"{type(self).__name__}: expected hx as a tuple (h_0, c_0), "
                                f"but got {type(hx).__name__}"
                                + (f" of length {len(hx)}" if isinstance(hx, (tuple, list))
                                   else ""))
            if isinstance(input, PackedSequence):
                return self._forward_packed(input, hx)
        return self._forward_tensor(input, hx)

    @torch.jit.unused
    def _forward_packed(self, input: PackedSequence, hx: Optional[Tuple[Tensor, Tensor]]):
        # Work in the packed (sorted by decreasing length) batch order, where the
        # rows still running at each step are a prefix, as the layer op wants.
        check_batch_sizes(type(self).__name__, input.batch_sizes, input.data.size(0))
        padded, lengths = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))
        if hx is not None and input.sorted_indices is not None:
            hx = (hx[0].index_select(1, input.sorted_indices),
                  hx[1].index_select(1, input.sorted_indices))
        out, (h_n, c_n) = self._run(padded, hx, lengths, batched=True)
        data = pack_padded_sequence(out, lengths).data
        if input.unsorted_indices is not None:
            h_n = h_n.index_select(1, input.unsorted_indices)
            c_n = c_n.index_select(1, input.unsorted_indices)
        packed = PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                input.unsorted_indices)
        return packed, (h_n, c_n)

    def _forward_tensor(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]]
                        ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        who = "LSTM"
        if input.dim() != 2 and input.dim() != 3:
            layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
            raise ValueError(
                f"{who}: expected input of shape {layout} or unbatched (seq_len, input_size), "
                f"but got {list(input.shape)}"
            )
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(1)
            if hx is not None:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        elif self.batch_first:
            input = input.transpose(0, 1)
        out, (h_n, c_n) = self._run(input, hx, None, batched)
        if not batched:
            return out.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (h_n, c_n)

    def _run(self, x: Tensor, hx: Optional[Tuple[Tensor, Tensor]], lengths: Optional[Tensor],
             batched: bool) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """The layers over a time-major ``x (T, B, input_size)``."""
        who = "LSTM"
        w0 = self.weight_ih_l0
        check_supported_device(who, w0)
        check_float_like(who, "input", x, w0)
        steps, batch = x.shape[0], x.shape[1]
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"{who}: expected input with {self.input_size} features (input_size), "
                f"but got {x.shape[2]} (input shape {list(x.shape)})"
            )
        states = self.num_layers * self.num_directions
        h_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        if hx is None:
            h0 = torch.zeros([states, batch, h_size], dtype=x.dtype, device=x.device)
            c0 = h0 if h_size == self.hidden_size else torch.zeros(
                [states, batch, self.hidden_size], dtype=x.dtype, device=x.device)
        else:
            h0, c0 = hx
            h_name = "proj_size" if self.proj_size > 0 else "hidden_size"
            for name, t, size, size_name in (("h_0", h0, h_size, h_name),
                                             ("c_0", c0, self.hidden_size, "hidden_size")):
                check_float_like(who, name, t, w0)
                state = [states, batch, size]
                if batched:
                    layout = f"(num_layers * num_directions, batch, {size_name})"
                    expected, shown = state, list(t.shape)
                else:
                    layout = f"(num_layers * num_directions, {size_name}) for unbatched input"
                    expected, shown = [states, size], [t.shape[0]] + list(t.shape[2:])
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
                w_ih, w_hh = self._flat_weights[5 * idx], self._flat_weights[5 * idx + 1]
                assert w_ih is not None and w_hh is not None
                seq = layer_input if direction == 0 else reverse_padded(layer_input, lengths)
                out, hy, cy = ops.lstm_layer(
                    seq, h0[idx], c0[idx], w_ih, w_hh, self._flat_weights[5 * idx + 2],
                    self._flat_weights[5 * idx + 3], lengths, self._flat_weights[5 * idx + 4])
                outputs.append(out if direction == 0 else reverse_padded(out, lengths))
                h_n.append(hy)
                c_n.append(cy)
            layer_input = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer + 1 < self.num_layers:
                layer_input = F.dropout(layer_input, self.dropout, True)
        # Not views of hy and cy (unsqueeze), though stack's copies cost ~15 us
        # a step: torch.nn.LSTM's h_n and c_n are no views, and detach_(),
        # which truncated backpropagation through time calls, refuses views.
        return layer_input, (torch.stack(h_n), torch.stack(c_n))
