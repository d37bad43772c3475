"""The reference LSTM: the textbook equations in plain PyTorch.

This file is the single source of truth that every kernel is tested against.
It is written for clarity, not speed, and autograd differentiates it. The
equations are the seed tutorial's, in torch.nn.LSTM's parameter layout
(gate order i, f, g, o; ``W = [W_ih | W_hh]`` acting on ``cat(x, h)``)::

    combined = cat(x, h_prev)
    i     = sigmoid(W_i combined + b_i)      input gate
    f     = sigmoid(W_f combined + b_f)      forget gate
    c_hat = tanh(W_g combined + b_g)         candidate cell
    o     = sigmoid(W_o combined + b_o)      output gate
    c     = f * c_prev + i * c_hat
    h     = o * tanh(c)

With a projection (LSTMP, torch.nn.LSTM's ``proj_size``), ``h = (o * tanh(c))
W_hr^T``: h has ``proj_size`` features and ``W_hh`` acts on it.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor


def lstm_cell(x: Tensor, h_prev: Tensor, c_prev: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None
              ) -> Tuple[Tensor, Tensor]:
    """One step: ``(h, c)`` from ``x (B, I)`` and ``h_prev, c_prev (B, H)``."""
    combined = torch.cat([x, h_prev], dim=1)
    W_i, W_f, W_g, W_o = torch.cat([w_ih, w_hh], dim=1).chunk(4)
    bias = torch.zeros(w_ih.shape[0], dtype=x.dtype, device=x.device)
    if b_ih is not None:
        bias = bias + b_ih
    if b_hh is not None:
        bias = bias + b_hh
    b_i, b_f, b_g, b_o = bias.chunk(4)
    i = torch.sigmoid(combined @ W_i.t() + b_i)
    f = torch.sigmoid(combined @ W_f.t() + b_f)
    c_hat = torch.tanh(combined @ W_g.t() + b_g)
    o = torch.sigmoid(combined @ W_o.t() + b_o)
    c = f * c_prev + i * c_hat
    h = o * torch.tanh(c)
    return h, c


def lstm_layer(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
               b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
               lengths: Optional[Tensor] = None, w_hr: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """The cell over ``x (T, B, I)``: ``(output (T, B, H or P), h_n, c_n)``.

    With ``lengths``, row ``b`` runs its first ``lengths[b]`` steps only: later
    outputs are zero and ``(h_n, c_n)`` is its state after its own last step.
    """
    h, c = h0, c0
    outputs: List[Tensor] = []
    for t in range(x.shape[0]):
        h_new, c_new = lstm_cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        if lengths is None:
            h, c = h_new, c_new
            outputs.append(h)
        else:
            running = (lengths > t).unsqueeze(1).to(x.device)
            h = torch.where(running, h_new, h)
            c = torch.where(running, c_new, c)
            outputs.append(torch.where(running, h_new, torch.zeros_like(h_new)))
    if outputs:
        output = torch.stack(outputs)
    else:
        output = x.new_zeros((0, x.shape[1], h0.shape[1]))
    return output, h, c
