"""``LSTMCell``: one step of the C++ LSTM (``ops.lstm_cell``), a drop-in for
``torch.nn.LSTMCell``."""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .. import ops
from ._checks import check_float_like, check_shape, check_supported_device
from .tutorial import load_tutorial_cell


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
        hy, cy = ops.lstm_cell(input, h, c, self.weight_ih, self.weight_hh, self.bias_ih,
                               self.bias_hh)
        if not batched:
            return hy.squeeze(0), cy.squeeze(0)
        return hy, cy

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        if load_tutorial_cell(state_dict, prefix, self.input_size, self.hidden_size, error_msgs):
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                          missing_keys, unexpected_keys, error_msgs)
