"""Argument checks shared by the modules (LSTMCell, LSTM), written in
TorchScript's subset of Python so that scripted modules report bad input as
clearly as eager ones."""
from typing import List

from torch import Tensor


def check_float_like(who: str, name: str, t: Tensor, param: Tensor) -> None:
    """``t`` must have the parameters' dtype and device."""
    if t.dtype != param.dtype:
        raise TypeError(
            f"{who}: expected {name} to have dtype {param.dtype} (the dtype of the parameters), "
            f"but got {t.dtype}; convert the input or the module with .to()"
        )
    if t.device != param.device:
        raise ValueError(
            f"{who}: expected {name} on {param.device} (the device of the parameters), "
            f"but got {t.device}"
        )


def check_shape(who: str, name: str, t: Tensor, expected: List[int], layout: str) -> None:
    if list(t.shape) != expected:
        raise ValueError(
            f"{who}: expected {name} of shape {expected} {layout}, but got {list(t.shape)}"
        )


def check_supported_device(who: str, t: Tensor) -> None:
    """The kernels are CPU-only: say so instead of a dispatcher error."""
    if t.device.type != "cpu" and t.device.type != "meta":
        raise ValueError(
            f"{who}: lstm_ext's kernels run on the cpu only, but the parameters are on "
            f"{t.device}; move the module to the cpu with .cpu()"
        )
