"""ONNX: modules built on lstm_ext, with the layer op mapped onto the standard
ONNX ``LSTM`` operator, for onnxruntime, TensorRT and mobile runtimes.

``export_onnx(module, path)`` exports ``forward`` with ``torch.export`` (dynamic
batch and sequence axes), checks that every lstm_ext op in the graph can be
expressed in ONNX, and converts it with torch's ONNX exporter (onnxscript),
given ``onnx_translation_table()``:

* ``lstm_ext::lstm_layer_forward`` and ``lstm_layer_inference`` (one
  direction of one layer; which one a graph holds depends on grad mode when it
  was traced) -> one
  forward-direction ONNX ``LSTM``. Gates are reordered from ours (i, f, g, o,
  as torch.nn.LSTM) to ONNX's (i, o, f, c) in W (4H, I) and R (4H, H); the bias
  is ``[b_ih, b_hh]`` (8H); states gain ONNX's leading num_directions axis;
  ``lengths`` becomes ``sequence_lens`` (int32), whose semantics are ours.
  A bidirectional lstm_ext.LSTM is two such calls, the second on the reversed
  sequence (flip ops around it), so layers, directions and batch_first come out
  as the module computes them.
* ``lstm_ext::lstm_cell_forward`` -> an ONNX ``LSTM`` over one step.
* ``lstm_ext::gemm`` -> ``MatMul``.

What ONNX cannot express is refused with ``ExportError`` before any file is
written, never a wrong graph: projections (``proj_size > 0``, the op's
``w_hr``: ONNX's LSTM has no projection), a graph that reads the ops' saved
activations (``gates``/``cs``: training graphs; export in eval mode, which
``export_onnx`` does), and the backward ops.

Needs the ``onnx`` and ``onnxscript`` packages (``pip install lstm_ext[onnx]``;
``onnxruntime`` to run the file).
"""
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._common import (ExportError, batch_first_of, custom_ops, dtype_of, eval_mode,
                      export_sequence, input_size_of, min_steps_of, sequence)

DEFAULT_OPSET = 18
ONNX_FORMAT = "lstm_ext.onnx/1"
# Outputs of lstm_layer_forward / lstm_cell_forward that only the backward op
# reads: a graph that uses them is a training graph, which ONNX's LSTM cannot give.
_SAVED_OUTPUTS = {"lstm_layer_forward": {3: "gates", 4: "cs"},
                  "lstm_cell_forward": {2: "gates"}}
_TRANSLATED = ("lstm_layer_forward", "lstm_layer_inference", "lstm_cell_forward", "gemm")


def _onnxscript():
    try:
        import onnxscript  # noqa: F401
        from onnxscript import opset18 as op
    except ImportError as exc:
        raise ExportError("ONNX export needs the onnx and onnxscript packages "
                          "(pip install onnx onnxscript, or lstm_ext[onnx])") from exc
    return op


def _static(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ExportError(f"{what} must be static for ONNX's LSTM, but it is {value}") from None


def _gate_order(hidden: int):
    """Row indices taking ours (i, f, g, o) to ONNX's (i, o, f, c)."""
    h = hidden
    return np.concatenate([np.arange(0, h), np.arange(3 * h, 4 * h), np.arange(h, 2 * h),
                           np.arange(2 * h, 3 * h)]).astype(np.int64)


def _onnx_lstm(op, input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths):
    """A forward ONNX LSTM over a time-major ``input (T, B, I)`` from (B, H)
    states: ``Y (T, 1, B, H), Y_h (1, B, H), Y_c (1, B, H)``."""
    from onnx import numpy_helper
    hidden = _static(w_hh.shape[1], "lstm_ext: the hidden size (w_hh.shape[1])")
    index = op.Constant(value=numpy_helper.from_array(_gate_order(hidden), "gate_order"))

    def onnx_order(w):
        return op.Gather(w, index, axis=0)

    w = op.Unsqueeze(onnx_order(w_ih), [0])
    r = op.Unsqueeze(onnx_order(w_hh), [0])
    bias = None
    if b_ih is not None or b_hh is not None:
        zeros = op.ConstantOfShape(op.Constant(value_ints=[4 * hidden]),
                                   value=numpy_helper.from_array(np.zeros(1, np.float32)))
        b_i = b_ih if b_ih is not None else op.CastLike(zeros, b_hh)
        b_h = b_hh if b_hh is not None else op.CastLike(zeros, b_ih)
        bias = op.Unsqueeze(op.Concat(onnx_order(b_i), onnx_order(b_h), axis=0), [0])
    seq_lens = op.Cast(lengths, to=6) if lengths is not None else None  # int32
    return op.LSTM(input, w, r, bias, seq_lens, op.Unsqueeze(hx, [0]), op.Unsqueeze(cx, [0]),
                   hidden_size=hidden)


def _layer_forward(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, w_hr=None):
    op = _onnxscript()
    if w_hr is not None:  # also checked on the graph, before conversion
        raise ExportError("lstm_ext::lstm_layer_forward with w_hr (proj_size > 0): ONNX's LSTM "
                          "operator has no projection")
    y, y_h, y_c = _onnx_lstm(op, input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths)
    out = op.Squeeze(y, [1])
    # gates and cs are read by the backward op only; the graph check guarantees
    # nothing uses them, and the exporter's optimizer removes these stand-ins.
    return out, op.Squeeze(y_h, [0]), op.Squeeze(y_c, [0]), out, out


def _layer_inference(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, w_hr=None):
    return _layer_forward(input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths, w_hr)[:3]


def _cell_forward(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None):
    op = _onnxscript()
    _, y_h, y_c = _onnx_lstm(op, op.Unsqueeze(input, [0]), hx, cx, w_ih, w_hh, b_ih, b_hh, None)
    hy, cy = op.Squeeze(y_h, [0]), op.Squeeze(y_c, [0])
    return hy, cy, hy


def _gemm(a, b):
    return _onnxscript().MatMul(a, b)


def onnx_translation_table() -> Dict[object, object]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``:
    the lstm_ext ops that have an ONNX form. Check the graph first
    (``check_graph``): the translations assume what it checks."""
    ops = torch.ops.lstm_ext
    return {ops.lstm_layer_forward.default: _layer_forward,
            ops.lstm_layer_inference.default: _layer_inference,
            ops.lstm_cell_forward.default: _cell_forward,
            ops.gemm.default: _gemm}


def _arguments(node) -> Dict[str, object]:
    """The op's arguments by schema name (positional or keyword)."""
    schema = node.target._schema
    values = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            values[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            values[arg.name] = node.kwargs[arg.name]
        else:
            values[arg.name] = arg.default_value if arg.has_default_value() else None
    return values


def check_graph(graph: torch.fx.Graph) -> None:
    """Raises ExportError for any lstm_ext op that ONNX cannot express as used."""
    for node in graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload) \
                or node.target.namespace != "lstm_ext":
            continue
        name = node.target._opname
        if name not in _TRANSLATED:
            raise ExportError(
                f"lstm_ext::{name} cannot be exported to ONNX (only inference graphs: "
                "lstm_layer_forward, lstm_layer_inference, lstm_cell_forward and gemm have ONNX "
                "forms); "
                "export the module in eval mode, without gradients")
        args = _arguments(node)
        for proj in ("w_hr", "weight_hr", "proj"):
            if args.get(proj) is not None:
                raise ExportError(
                    f"lstm_ext::{name}: a projection ({proj}, proj_size > 0) cannot be "
                    "expressed in ONNX: its LSTM operator has no projection weights")
        saved = _SAVED_OUTPUTS.get(name, {})
        for user in node.users:
            index = user.args[1] if user.target.__name__ == "getitem" else None
            if index in saved and user.users:
                raise ExportError(
                    f"lstm_ext::{name}: the graph reads its saved activations "
                    f"('{saved[index]}', for the backward pass); ONNX's LSTM does not "
                    "compute them. Export an inference graph")


def export_onnx(module: nn.Module, path: str, *, input_size: Optional[int] = None,
                batch_first: Optional[bool] = None, opset_version: int = DEFAULT_OPSET,
                input_names: Sequence[str] = ("x",),
                output_names: Optional[List[str]] = None,
                metadata: Optional[Dict[str, object]] = None, verify: bool = True) -> str:
    """Writes ``module``'s forward as ONNX to ``path`` with dynamic ``batch`` and
    ``steps`` axes on the sequence input (``(batch, steps, input_size)``, or
    time-major for an ``lstm_ext.LSTM`` with ``batch_first=False``); returns
    ``path``. ``verify`` checks the file with ``onnx.checker``. Raises
    ExportError (naming what) for what ONNX cannot express. ``metadata`` goes
    into the model's ``metadata_props`` (values as text), beside
    ``lstm_ext.format``."""
    _onnxscript()
    if not isinstance(module, nn.Module):
        raise ExportError(f"module: expected a torch.nn.Module, but got {type(module).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ExportError(f"path: {path} is a directory; give a file name, such as "
                          f"{os.path.join(path, 'model.onnx')}")
    size = input_size_of(module, input_size)
    first = batch_first_of(module, batch_first)
    if getattr(module, "proj_size", 0) or getattr(getattr(module, "lstm", None), "proj_size", 0):
        raise ExportError("module: proj_size > 0 cannot be expressed in ONNX: its LSTM "
                          "operator has no projection weights")
    dtype = dtype_of(module)
    if dtype not in (torch.float32, torch.float64):  # ONNX's LSTM: float16, float, double
        raise ExportError(f"module: ONNX's LSTM operator takes float32 or float64, but the "
                          f"module is {dtype}; export a float32 copy (module.float())")
    with eval_mode(module):
        min_steps = min_steps_of(module, size, first, dtype)
        example = sequence(2, max(min_steps, getattr(module, "window", 3)), size, first, dtype)
        ep, shapes, _, _ = export_sequence(module, example, first, min_steps, 2 ** 31 - 1,
                                           2 ** 31 - 1)
        check_graph(ep.graph)
        unknown = [o for o in custom_ops(ep.graph)
                   if o.startswith("lstm_ext::") and o[10:] not in _TRANSLATED]
        if unknown:  # (check_graph refuses them first)
            raise ExportError(f"no ONNX form for {', '.join(unknown)}")
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                program = torch.onnx.export(
                    ep, (), dynamo=True, opset_version=opset_version,
                    custom_translation_table=onnx_translation_table(),
                    input_names=list(input_names), output_names=output_names,
                    dynamic_shapes=shapes, verbose=False)
            except Exception as exc:  # noqa: BLE001  (the exporter wraps our ExportError)
                cause = exc
                while cause is not None and not isinstance(cause, ExportError):
                    cause = cause.__cause__ or cause.__context__
                if cause is not None:
                    raise ExportError(str(cause)) from None
                raise
    props = {"lstm_ext.format": ONNX_FORMAT, "lstm_ext.module": type(module).__name__,
             "lstm_ext.input_size": str(size),
             "lstm_ext.layout": "batch_first" if first else "time_first"}
    props.update({str(k): v if isinstance(v, str) else json.dumps(v)
                  for k, v in (metadata or {}).items()})
    program.model.metadata_props.update(props)
    tmp = path + ".tmp"
    try:
        program.save(tmp)
        if verify:
            import onnx
            onnx.checker.check_model(tmp, full_check=True)
        os.replace(tmp, path)
    finally:  # a failed save or check leaves nothing behind
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
