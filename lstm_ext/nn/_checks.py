"""Argument checks shared by the modules (LSTMCell, LSTM), written in
TorchScript's subset of Python so that scripted modules report bad input as
clearly as eager ones."""
from typing import List

import torch
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


def check_batch_sizes(who: str, batch_sizes: Tensor, rows: int) -> None:
    """A PackedSequence's batch_sizes as pack_padded_sequence makes them: a 1-D
    int64 cpu tensor of positive, non-increasing counts summing to the rows of
    its data. torch's pad_packed_sequence trusts them: [3, 3, -2, 3, 4] for 11
    rows freed an invalid pointer and aborted the process."""
    if batch_sizes.dim() != 1 or batch_sizes.dtype != torch.int64 or \
            batch_sizes.device.type != "cpu" or batch_sizes.numel() == 0:
        raise ValueError(
            f"{who}: expected PackedSequence.batch_sizes as a non-empty 1-D int64 tensor on the "
            f"cpu, but got shape {list(batch_sizes.shape)}, {batch_sizes.dtype} on "
            f"{batch_sizes.device}"
        )
    sizes: List[int] = batch_sizes.tolist()
    for t in range(len(sizes)):
        if sizes[t] < 1 or (t > 0 and sizes[t] > sizes[t - 1]):
            raise ValueError(
                f"{who}: expected PackedSequence.batch_sizes positive and non-increasing (as "
                f"pack_padded_sequence makes them), but batch_sizes[{t}] = {sizes[t]} "
                f"after {sizes[t - 1] if t > 0 else 'nothing'}"
            )
    total = sum(sizes)
    if total != rows:
        raise ValueError(
            f"{who}: expected PackedSequence.batch_sizes to sum to the {rows} rows of its data, "
            f"but they sum to {total}"
        )
