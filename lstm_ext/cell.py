"""``LSTMCell``: one step of the C++ LSTM, a drop-in for ``torch.nn.LSTMCell``."""
import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ._checks import check_float_like, check_shape, check_supported_device

# The seed tutorial's cell: one nn.Linear(input + hidden, hidden) per gate,
# in torch.nn.LSTM's gate order (i, f, g, o).
TUTORIAL_GATES = ("Wi", "Wf", "Wc", "Wo")


def convert_tutorial_state_dict(state_dict: Dict[str, Tensor], prefix: str, input_size: int,
                                hidden_size: int) -> None:
    """Rewrites, in place, a tutorial cell's ``{prefix}W?.weight/bias`` keys as
    ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (``bias_hh`` zero)."""
    weights, biases = [], []
    for gate in TUTORIAL_GATES:
        w = state_dict.pop(prefix + gate + ".weight")
        expected = (hidden_size, input_size + hidden_size)
        if tuple(w.shape) != expected:
            raise ValueError(
                f"tutorial state dict: expected {prefix}{gate}.weight of shape {list(expected)} "
                f"(hidden_size, input_size + hidden_size), but got {list(w.shape)}"
            )
        weights.append(w)
        b = state_dict.pop(prefix + gate + ".bias", None)
        if b is not None:
            biases.append(b)
    state_dict[prefix + "weight_ih"] = torch.cat([w[:, :input_size] for w in weights])
    state_dict[prefix + "weight_hh"] = torch.cat([w[:, input_size:] for w in weights])
    if biases:
        if len(biases) != len(TUTORIAL_GATES):
            raise ValueError(f"tutorial state dict: some of {prefix}W?.bias are missing")
        state_dict[prefix + "bias_ih"] = torch.cat(biases)
        state_dict[prefix + "bias_hh"] = torch.zeros_like(state_dict[prefix + "bias_ih"])


class LSTMCell(nn.Module):
    r"""An LSTM cell whose step and gradient run in lstm_ext's C++ kernels.

    Same constructor, parameters (``weight_ih (4H, I)``, ``weight_hh (4H, H)``,
    ``bias_ih``, ``bias_hh``; gate order i, f, g, o), initialisation and
    ``forward(input, hx=None) -> (h, c)`` as :class:`torch.nn.LSTMCell`, so
    ``load_state_dict(nn.LSTMCell(...).state_dict())`` works. A state dict of the
    seed tutorial's cell (``Wf``, ``Wi``, ``Wc``, ``Wo`` linears over
    ``cat(x, h)``) loads too.
    """

    __constants__ = ["input_size", "hidden_size"]

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        if input_size < 0 or hidden_size <= 0:
            raise ValueError(
                f"LSTMCell: input_size must be >= 0 and hidden_size > 0, "
                f"but got input_size={input_size}, hidden_size={hidden_size}"
            )
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch.nn.LSTMCell."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None
                ) -> Tuple[Tensor, Tensor]:
        who = "LSTMCell"
        if input.dim() != 1 and input.dim() != 2:
            raise ValueError(
                f"{who}: expected input of shape (batch, input_size) or (input_size,), "
                f"but got {list(input.shape)}"
            )
        check_supported_device(who, self.weight_ih)
        check_float_like(who, "input", input, self.weight_ih)
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        batch = input.shape[0]
        check_shape(who, "input", input, [batch, self.input_size], "(batch, input_size)")
        if hx is None:
            h = torch.zeros(batch, self.hidden_size, dtype=input.dtype, device=input.device)
            c = h
        else:
            h, c = hx
            if not batched:
                h = h.unsqueeze(0)
                c = c.unsqueeze(0)
            state = [batch, self.hidden_size]
            check_float_like(who, "hx[0]", h, self.weight_ih)
            check_float_like(who, "hx[1]", c, self.weight_ih)
            check_shape(who, "hx[0]", h, state, "(batch, hidden_size)")
            check_shape(who, "hx[1]", c, state, "(batch, hidden_size)")
        hy, cy, _ = torch.ops.lstm_ext.lstm_cell_forward(
            input, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh
        )
        if not batched:
            return hy.squeeze(0), cy.squeeze(0)
        return hy, cy

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        if prefix + TUTORIAL_GATES[0] + ".weight" in state_dict:
            try:
                convert_tutorial_state_dict(state_dict, prefix, self.input_size, self.hidden_size)
            except (KeyError, ValueError) as exc:
                error_msgs.append(str(exc))
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)
