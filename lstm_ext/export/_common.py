"""What the exporters share: the sequence input a module takes, the range of
its dynamic axes, and the error they raise."""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn


class ExportError(ValueError):
    """A module, a configuration or an exported file that an exporter or a
    reader refuses; the message names the argument or the file."""


DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64",
               torch.float16: "float16", torch.bfloat16: "bfloat16"}


def dtype_of(module: nn.Module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return torch.float32


def input_size_of(module: nn.Module, input_size: Optional[int]) -> int:
    size = input_size if input_size is not None else getattr(module, "input_size", None)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ExportError(
            f"input_size: expected a positive int (or a module with an integer input_size "
            f"attribute such as lstm_ext.LSTM, LSTMModel or a Forecaster), but got {size!r}")
    return size


def batch_first_of(module: nn.Module, batch_first: Optional[bool]) -> bool:
    """lstm_ext.LSTM says it (``batch_first``); LSTMModel and the Forecaster
    take ``(batch, steps, input_size)``."""
    if batch_first is not None:
        return bool(batch_first)
    return bool(getattr(module, "batch_first", True))


def sequence(batch: int, steps: int, input_size: int, batch_first: bool,
             dtype: torch.dtype, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, steps, input_size) if batch_first else (steps, batch, input_size)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def min_steps_of(module: nn.Module, input_size: int, batch_first: bool, dtype: torch.dtype,
                 most: int = 8) -> int:
    """The fewest time steps the module accepts (a Forecaster needs 2: it reads
    the changes between values), found by running it."""
    for steps in range(1, most + 1):
        try:
            with torch.no_grad():
                module(sequence(2, steps, input_size, batch_first, dtype))
            return steps
        except Exception:  # noqa: BLE001  (the module refuses this length)
            continue
    raise ExportError(f"module: {type(module).__name__} fails on every sequence of 1 to {most} "
                      f"steps of shape (batch, steps, {input_size}); cannot export it")


def check_range(name: str, low: int, high: int) -> Tuple[int, int]:
    if not (isinstance(high, int) and high >= low):
        raise ExportError(f"{name}: expected an int >= {low}, but got {high!r}")
    return low, high


def custom_ops(graph: torch.fx.Graph) -> List[str]:
    """``namespace::name`` of every non-ATen op in an exported graph."""
    found = []
    for node in graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            ns = node.target.namespace
            if ns not in ("aten", "prim", "prims"):
                name = f"{ns}::{node.target._opname}"
                if name not in found:
                    found.append(name)
    return found


class eval_mode:
    """Exports see the module in eval mode (no dropout); its mode is restored."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self):
        self.training = self.module.training
        self.module.eval()
        return self.module

    def __exit__(self, *exc):
        self.module.train(self.training)
        return False


def _axis_range(ep, axis: int, fallback):
    """The exported range of the first input's ``axis``: its symbol's range,
    or (n, n) where export specialised it to n."""
    placeholder = [n for n in ep.graph.nodes if n.op == "placeholder"
                   and n.name in ep.graph_signature.user_inputs][0]
    size = placeholder.meta["val"].shape[axis]
    if isinstance(size, int):
        return size, size
    vr = ep.range_constraints.get(size.node.expr)
    if vr is None:
        return fallback
    return max(_bound(vr.lower, fallback[0]), fallback[0]), \
        min(_bound(vr.upper, fallback[1]), fallback[1])


def _bound(value, default: int) -> int:
    try:
        return int(value)
    except Exception:  # noqa: BLE001  (sympy's and torch's infinities)
        return default


def export_sequence(module: nn.Module, example: Tensor, batch_first: bool, min_steps: int,
                    max_batch: int, max_steps: int, extra_inputs: tuple = ()):
    """``torch.export`` of ``module(example)`` with dynamic batch and sequence
    axes: ``(exported program, dynamic_shapes, batch range, steps range)``.

    First with the whole range asked for; if the module's code narrows it (say
    it branches on the length), with ``Dim.AUTO``, which lets export find the
    range, which is then what the package records and its readers enforce."""
    Dim = torch.export.Dim
    b_axis, t_axis = (0, 1) if batch_first else (1, 0)
    asked = {b_axis: Dim("batch", min=1, max=max_batch),
             t_axis: Dim("steps", min=min_steps, max=max_steps)}
    error = None
    for dims in (asked, {b_axis: Dim.AUTO, t_axis: Dim.AUTO}):
        shapes = (dims,) + tuple(None for _ in extra_inputs)
        try:
            # backed_size_oblivious: a length of 1 somewhere inside (the one
            # change of a 2-value window) stays symbolic instead of being
            # specialised away. no_grad: a deployed program never takes a
            # gradient, so the graph holds lstm_layer_inference, which keeps
            # nothing for a backward (lstm_ext.ops.lstm_layer).
            with torch.fx.experimental._config.patch(backed_size_oblivious=True), \
                    torch.no_grad():
                ep = torch.export.export(module, (example, *extra_inputs),
                                         dynamic_shapes=shapes)
        except torch._dynamo.exc.UserError as exc:
            error = exc
            continue
        batch = _axis_range(ep, b_axis, (1, max_batch))
        steps = _axis_range(ep, t_axis, (min_steps, max_steps))
        return ep, shapes, batch, steps
    raise ExportError(f"module: torch.export cannot export {type(module).__name__} with dynamic "
                      f"batch and sequence axes ({str(error).splitlines()[0]})") from error
