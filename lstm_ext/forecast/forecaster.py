"""``Forecaster``: a trained LSTMModel plus its scaling, in original units.

This is the module that is exported (TorchScript; torch.export works too) and
deployed: it takes raw values, so a C++ service needs nothing but the model
file. It feeds the LSTM the standardised first differences of the series.

Without ``linear`` (as before) the forecast is the last observed value plus
the LSTM's predicted standardised changes. With ``linear`` (what ``train``
builds) it is a hybrid: a linear autoregression on the window's last
``window - 1`` changes (ridge regression fitted on the training part in
closed form, ``windows.fit_linear``) gives a base forecast, and the LSTM
predicts the standardised residual of that base, as ES-RNN pairs a statistical
model with an LSTM on its normalised residual. Both parts are inside
``forward``: nothing outside the module is needed at inference.
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
    __constants__ = ["input_size", "window", "horizon", "scale", "target_scale", "hybrid",
                     "seasonal_on", "harmonics", "per_window"]

    def __init__(self, model: LSTMModel, scale: float, target_scale: float, window: int,
                 horizon: int, linear: Optional[Tensor] = None,
                 seasonal: Optional[Tensor] = None, per_window: bool = False) -> None:
        super().__init__()
        self.model = model
        # per_window (a global model of several series): each window is first
        # put on a common scale by itself, z = (x - last) / s with s the mean
        # absolute change over the window (the last ``window`` values), the
        # rest of the forecaster works on z, and its forecast is mapped back,
        # last + s * forecast(z); so one model fits series of any level and
        # size. A flat window (s = 0) forecasts its last value.
        self.per_window = bool(per_window)
        self.input_size = 1
        self.window = window
        self.horizon = horizon
        self.scale = scale
        self.target_scale = target_scale
        # linear (window + 1, horizon): the base forecast's weights on the
        # window's window - 1 changes (oldest first), on the last value, and
        # an intercept (raw units in, raw units out)
        self.hybrid = linear is not None
        weights = torch.zeros(window + 1, horizon) if linear is None else \
            linear.detach().to(torch.float32).reshape(window + 1, horizon).clone()
        self.register_buffer("linear", weights)
        # seasonal (2 + 2K,): [omega, psi, sin coefficients, cos coefficients]
        # of the series' seasonal shape (windows.fit_seasonal); the linear part
        # then works on the window less that shape, phase-locked to the window
        self.seasonal_on = seasonal is not None
        packed = torch.zeros(4) if seasonal is None else \
            torch.as_tensor(seasonal, dtype=torch.float64).reshape(-1).clone()
        self.harmonics = (packed.numel() - 2) // 2
        self.register_buffer("seasonal", packed.to(torch.float32))
        omega = float(packed[0])
        t = torch.arange(-window + 1, 1, dtype=torch.float64)
        design = torch.stack([torch.ones(window), t / window, torch.cos(omega * t),
                              torch.sin(omega * t)], 1)
        self.register_buffer("phase_projection", torch.linalg.pinv(design).to(torch.float32))
        self.register_buffer("offsets", t.to(torch.float32))
        self.register_buffer("leads", torch.arange(1, horizon + 1, dtype=torch.float32))

    def base(self, x: Tensor) -> Tensor:
        """The linear part of the forecast ``(batch, horizon)``: the last value
        plus a linear function of the last ``window - 1`` changes (changes
        before the first value given count as 0), the last value and 1."""
        last = x[:, -1, 0]
        if not self.hybrid:
            return last.unsqueeze(1).expand(x.shape[0], self.horizon)
        # the first value repeated in front, then the last ``window`` values:
        # no branch on the length, so torch.export keeps the steps axis dynamic
        padded = torch.cat([x[:, :1, 0].expand(x.shape[0], self.window), x[:, :, 0]], dim=1)
        recent = padded[:, -self.window:]
        weights = self.linear.to(x.dtype)
        ahead = torch.zeros_like(recent[:, :1])
        if self.seasonal_on:
            recent, ahead = self._deseasonalise(recent)
        changes = recent[:, 1:] - recent[:, :-1]
        level = recent[:, -1:]
        return (last.unsqueeze(1) + ahead + changes @ weights[:self.window - 1]
                + level * weights[self.window - 1] + weights[self.window])

    def _shape(self, theta: Tensor) -> Tensor:
        """The seasonal shape at phases ``theta`` (any shape)."""
        coef = self.seasonal.to(theta.dtype)
        k = torch.arange(1, self.harmonics + 1, dtype=theta.dtype, device=theta.device)
        h = theta.unsqueeze(-1) * k
        return (torch.sin(h) * coef[2:2 + self.harmonics]).sum(-1) + \
            (torch.cos(h) * coef[2 + self.harmonics:]).sum(-1)

    def _deseasonalise(self, recent: Tensor) -> Tuple[Tensor, Tensor]:
        """(the window less its phase-locked seasonal shape, the shape's change
        from the last value to each lead): as ``windows.deseasonalise``."""
        dtype = recent.dtype
        omega = self.seasonal[0].to(dtype)
        c = recent @ self.phase_projection.to(dtype).t()
        theta = self.seasonal[1].to(dtype) - torch.atan2(c[:, 3], c[:, 2])
        z = recent - self._shape(theta.unsqueeze(1) + omega * self.offsets.to(dtype))
        ahead = self._shape(theta.unsqueeze(1) + omega * self.leads.to(dtype)) - \
            self._shape(theta).unsqueeze(1)
        return z, ahead

    def forward(self, x: Tensor) -> Tensor:
        """``x (batch, steps, 1)`` raw values, steps >= 2 (normally ``window``)
        -> the next ``horizon`` values ``(batch, horizon)``."""
        if x.dim() != 3 or x.shape[2] != 1 or x.shape[1] < 2:
            raise ValueError(
                f"Forecaster: expected x of shape (batch, steps >= 2, 1), but got {list(x.shape)}"
            )
        if self.per_window:
            return self._per_window(x)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        diffs = (x[:, 1:] - x[:, :-1]) / self.scale
        if not self.hybrid:
            return x[:, -1] + self.model(diffs) * self.target_scale
        return self.base(x) + self.model(diffs) * self.target_scale

    def _per_window(self, x: Tensor) -> Tensor:
        """``forward`` of a per-window-scaled forecaster: the last ``window``
        values (the first value repeated in front of a shorter input), scaled
        by their own mean absolute change, forecast, and scaled back."""
        padded = torch.cat([x[:, :1, 0].expand(x.shape[0], self.window), x[:, :, 0]], dim=1)
        recent = padded[:, -self.window:]
        last = recent[:, -1:]
        s = (recent[:, 1:] - recent[:, :-1]).abs().mean(dim=1, keepdim=True)
        moving = s > 0
        s = torch.where(moving, s, torch.ones_like(s))
        z = ((recent - last) / s).unsqueeze(2)
        return last + torch.where(moving, s * self._forward(z), torch.zeros_like(s))

    @torch.jit.export
    def step(self, x: Tensor, state: Optional[Tuple[Tensor, Tensor, Tensor]] = None
             ) -> Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]:
        """Streaming: one new raw value per row, ``x (batch, 1)``, and the state
        of the previous call (``None`` at the start) -> the forecast
        ``(batch, horizon)`` from the values so far, and the new state. Equals
        ``forward`` on the same values, one step at a time. The state's last
        part holds the latest value (``(batch, 1)``), or for a hybrid the latest
        ``window`` values (``(batch, window)``, the first value repeated
        until that many were seen)."""
        if x.dim() != 2 or x.shape[1] != 1:
            raise ValueError(
                f"Forecaster.step: expected x of shape (batch, 1), but got {list(x.shape)}"
            )
        if state is None:  # one value, no change seen yet: persistence
            layers = self.model.lstm.num_layers
            zeros = torch.zeros(layers, x.shape[0], self.model.hidden_size, dtype=x.dtype,
                                device=x.device)
            recent = x.expand(x.shape[0], self.window).clone() if self.hybrid else x
            return x.expand(x.shape[0], self.horizon), (zeros, zeros, recent)
        h, c, recent = state  # zeros after the first value: the LSTM's own initial state
        if self.per_window:   # every window has its own scale: forward on the latest window
            recent = torch.cat([recent[:, 1:], x], dim=1)
            return self._per_window(recent.unsqueeze(2)), (h, c, recent)
        prev = recent[:, -1:]
        pred, (h, c) = self.model.step((x - prev) / self.scale, (h, c))
        if not self.hybrid:
            return x + pred * self.target_scale, (h, c, x)
        recent = torch.cat([recent[:, 1:], x], dim=1)
        return self.base(recent.unsqueeze(2)) + pred * self.target_scale, (h, c, recent)


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
