"""Exporters for modules built on lstm_ext (``lstm_ext.LSTM``, ``LSTMModel``,
the forecasting ``Forecaster``, or your own around them), beside TorchScript:

* ``export_pt2`` / ``load_pt2``: an AOTInductor package (``.pt2``) with dynamic
  batch and sequence axes, and streaming ``step`` programs; C++ programs load it
  with ``torch::inductor::AOTIModelPackageLoader`` after the op library.
* ``export_onnx`` / ``onnx_translation_table``: ONNX, the layer op mapped onto
  the standard ONNX ``LSTM`` operator (needs the ``onnx`` and ``onnxscript``
  packages; ``pip install lstm_ext[onnx]``).

Both raise ``ExportError`` (a ValueError) naming the argument they refuse.

``cmake_prefix_path``: where the package's CMake config lies, for C++ programs
that use the ops from the installed package (``find_package(lstm_ext)``, next
to ``find_package(Torch)`` with ``torch.utils.cmake_prefix_path``).
"""
import os as _os
from ._common import ExportError
from .onnx import ONNX_FORMAT, export_onnx, onnx_translation_table
from .pt2 import PT2_FORMAT, Pt2Model, export_pt2, load_pt2

cmake_prefix_path = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))),
                                 "share", "cmake")

__all__ = ["cmake_prefix_path", "ExportError", "ONNX_FORMAT", "PT2_FORMAT", "Pt2Model", "export_onnx", "export_pt2", "load_pt2",
           "onnx_translation_table"]
