"""``LSTMModel``: an LSTM over a sequence and a linear head on its last state."""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .lstm import LSTM
from .tutorial import load_tutorial_cell


class LSTMModel(nn.Module):
    r"""``(batch, seq_len, input_size) -> (batch, output_size)``, batch first.

    The seed tutorial's model (``LSTMModel(input_size, hidden_size,
    output_size)``: an LSTM cell run over the sequence, then a linear layer on
    the last hidden state), computed by :class:`lstm_ext.LSTM` in one C++ op per
    layer and direction. With ``bidirectional=True`` the head sees both
    directions' final states. Unbatched ``(seq_len, input_size)`` input gives
    ``(output_size,)``. A tutorial model's state dict (``lstm_cell.W?`` and
    ``fc``) loads too.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int,
                 num_layers: int = 1, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__()
        if isinstance(output_size, bool) or not isinstance(output_size, int) or output_size < 1:
            raise ValueError(f"LSTMModel: expected output_size an integer >= 1, but got "
                             f"{output_size!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.lstm = LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                         dropout=dropout, bidirectional=bidirectional, device=device,
                         dtype=dtype)
        directions = 2 if bidirectional else 1
        self.fc = nn.Linear(directions * hidden_size, output_size, device=device, dtype=dtype)

    def forward(self, x: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tensor:
        if x.dim() != 2 and x.dim() != 3:
            raise ValueError(
                "LSTMModel: expected x of shape (batch, seq_len, input_size) or unbatched "
                f"(seq_len, input_size), but got {list(x.shape)}"
            )
        batched = x.dim() == 3
        _, (h_n, _) = self.lstm(x if batched else x.unsqueeze(0), hx)
        directions = self.lstm.num_directions
        last = h_n[-directions:]                      # (directions, B, H), last layer
        last = last.transpose(0, 1).reshape(last.shape[1], -1)
        y = self.fc(last)
        return y if batched else y.squeeze(0)

    @torch.jit.export
    def step(self, x: Tensor, state: Optional[Tuple[Tensor, Tensor]] = None
             ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        """One time step for streaming: ``x (batch, input_size)`` and the state
        returned by the previous call (``None`` at the start) give the
        prediction ``(batch, output_size)`` for the sequence so far and the new
        state. Feeding a sequence step by step equals ``forward`` on it whole."""
        if self.lstm.bidirectional:
            raise ValueError("LSTMModel.step: a bidirectional model needs the whole sequence")
        if x.dim() != 2:
            raise ValueError(
                f"LSTMModel.step: expected x of shape (batch, input_size), but got {list(x.shape)}"
            )
        _, (h, c) = self.lstm(x.unsqueeze(1), state)
        return self.fc(h[-1]), (h, c)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # the tutorial's cell becomes layer 0 of self.lstm
        if load_tutorial_cell(state_dict, prefix + "lstm_cell.", self.input_size,
                              self.hidden_size, error_msgs,
                              rename=lambda name: f"{prefix}lstm.{name}_l0"):
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                          missing_keys, unexpected_keys, error_msgs)
