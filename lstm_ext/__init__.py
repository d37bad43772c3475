"""lstm_ext: an LSTM for PyTorch with C++ (ATen) forward and backward kernels.

The library: ``ops`` (the functional API over ``torch.ops.lstm_ext.*``, whose
kernels and autograd formulas are C++), ``nn`` (modules mirroring torch.nn) and
``reference`` (the equations every kernel is tested against). Importing the
package loads the op library, which registers ``torch.ops.lstm_ext.*`` for
eager Python, TorchScript and C++ alike. The forecasting application built on
it lives apart, in ``lstm_ext.forecast`` (``python -m lstm_ext``).
"""
from . import _library

_library.load()

from . import ops  # noqa: E402  (registers the fake kernels)
from ._library import library_path  # noqa: E402
from .nn import LSTM, LSTMCell, LSTMModel  # noqa: E402
from .ops import lstm_cell, lstm_layer, lstm_layer_int8, pointwise_capability  # noqa: E402
from .quantization import quantize  # noqa: E402

__all__ = ["LSTM", "LSTMCell", "LSTMModel", "library_path", "lstm_cell", "lstm_layer",
           "lstm_layer_int8", "pointwise_capability", "quantize"]
__version__ = "0.1.0"
