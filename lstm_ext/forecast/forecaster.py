"""``Forecaster``: a trained LSTMModel plus its scaling, in original units.

This is the module that is exported (TorchScript) and deployed: it takes raw
values, so a C++ service needs nothing but the model file. It feeds the LSTM
the standardised first differences of the series and turns the predicted
standardised changes back into levels, anchored at the last observed value.
``recursive_forecast`` runs it (exported or not) past its horizon.

(No pandas here: the op and module tests script Forecasters in environments
that have torch and numpy only.)
"""
import math
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..nn import LSTMModel
from .settings import TrainConfig


def build_model(cfg: TrainConfig, device=None) -> LSTMModel:
    """The (untrained) LSTMModel that the settings ``cfg`` describe."""
    return LSTMModel(1, cfg.hidden_size, cfg.horizon, num_layers=cfg.num_layers, device=device)


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


def recursive_forecast(forecaster, history: np.ndarray, window: int, steps: int) -> np.ndarray:
    """The next `steps` values after `history`, feeding forecasts back in when
    `steps` exceeds the model's horizon. ValueError if a forecast is not finite."""
    values = list(history[-window:])
    out: List[float] = []
    with torch.no_grad():
        while len(out) < steps:
            x = torch.tensor(values[-window:], dtype=torch.float32).reshape(1, -1, 1)
            pred = forecaster(x)[0].double().tolist()
            bad = next((k for k, v in enumerate(pred) if not math.isfinite(v)), None)
            if bad is not None:
                raise ValueError(f"its forecast {len(out) + bad + 1} step(s) ahead is not "
                                 f"finite ({pred[bad]}): the model overflows float32 here")
            out.extend(pred)
            values.extend(pred)
    return np.array(out[:steps])


def _last_line(exc: BaseException) -> str:
    """TorchScript errors end with the error raised; others have one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def forecast(forecaster, history: np.ndarray, window: int, steps: int,
             source: str) -> np.ndarray:
    """``recursive_forecast``, with every way the model can fail (an overflow,
    an error raised in it) as a ValueError naming ``source``, its file."""
    try:
        return recursive_forecast(forecaster, history, window, steps)
    except ValueError as exc:  # a forecast overflowed float32
        raise ValueError(f"{source}: {exc}") from None
    except (RuntimeError, torch.jit.Error) as exc:
        raise ValueError(f"{source}: the model failed ({_last_line(exc)})") from None
