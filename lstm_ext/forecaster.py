"""``Forecaster``: a trained LSTMModel plus its scaling, in original units.

This is the module that is exported (TorchScript) and deployed: it takes raw
values, so a C++ service needs nothing but the model file. It feeds the LSTM
the standardised first differences of the series and turns the predicted
standardised changes back into levels, anchored at the last observed value.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .model import LSTMModel
from .settings import LIMITS


class Forecaster(nn.Module):
    __constants__ = ["input_size", "window", "horizon", "scale", "target_scale"]

    def __init__(self, model: LSTMModel, scale: float, target_scale: float, window: int,
                 horizon: int) -> None:
        super().__init__()
        self.model = model
        self.input_size = 1
        self.window = window
        self.horizon = horizon
        self.scale = scale
        self.target_scale = target_scale

    def forward(self, x: Tensor) -> Tensor:
        """``x (batch, steps, 1)`` raw values, steps >= 2 (normally ``window``)
        -> the next ``horizon`` values ``(batch, horizon)``."""
        if x.dim() != 3 or x.shape[2] != 1 or x.shape[1] < 2:
            raise ValueError(
                f"Forecaster: expected x of shape (batch, steps >= 2, 1), but got {list(x.shape)}"
            )
        diffs = (x[:, 1:] - x[:, :-1]) / self.scale
        return x[:, -1] + self.model(diffs) * self.target_scale

    @torch.jit.export
    def step(self, x: Tensor, state: Optional[Tuple[Tensor, Tensor, Tensor]] = None
             ) -> Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]:
        """Streaming: one new raw value per row, ``x (batch, 1)``, and the state
        of the previous call (``None`` at the start) -> the forecast
        ``(batch, horizon)`` from the values so far, and the new state. Equals
        ``forward`` on the same values, one step at a time."""
        if x.dim() != 2 or x.shape[1] != 1:
            raise ValueError(
                f"Forecaster.step: expected x of shape (batch, 1), but got {list(x.shape)}"
            )
        if state is None:  # one value, no change seen yet: persistence
            layers = self.model.lstm.num_layers
            zeros = torch.zeros(layers, x.shape[0], self.model.hidden_size, dtype=x.dtype,
                                device=x.device)
            return x.expand(x.shape[0], self.horizon), (zeros, zeros, x)
        h, c, prev = state  # zeros after the first value: the LSTM's own initial state
        pred, (h, c) = self.model.step((x - prev) / self.scale, (h, c))
        return x + pred * self.target_scale, (h, c, x)


def check_scripted(module) -> None:
    """Raises ValueError unless ``module`` (from ``torch.jit.load``) is a scripted
    Forecaster: its type, its ``forward`` and ``step`` methods, and its
    constants (window, horizon, scaling) with the values a Forecaster can have."""
    name = getattr(module, "original_name", type(module).__name__)
    if not isinstance(module, torch.jit.ScriptModule) or name != "Forecaster":
        raise ValueError(f"not an lstm_ext Forecaster, but a {name}")
    for method in ("forward", "step"):
        if not callable(getattr(module, method, None)):
            raise ValueError(f"a Forecaster without a '{method}' method")
    for attr in ("window", "horizon", "scale", "target_scale"):
        try:
            LIMITS[attr].check(getattr(module, attr, None))
        except ValueError as exc:
            raise ValueError(f"Forecaster attribute '{attr}': {exc}") from None
    if getattr(module, "input_size", None) != 1:
        raise ValueError(f"Forecaster attribute 'input_size': expected 1, "
                         f"but got {getattr(module, 'input_size', None)!r}")
