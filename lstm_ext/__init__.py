"""lstm_ext: an LSTM for PyTorch with C++ (ATen) forward and backward kernels.

Importing the package loads the op library, which registers
``torch.ops.lstm_ext.*`` for eager Python, TorchScript and C++ alike.
"""
import torch

from . import _library

_library.load()

from . import _ops  # noqa: E402, F401  (registers fake kernels and autograd formulas)
from ._library import library_path  # noqa: E402
from ._ops import lstm_cell, lstm_layer  # noqa: E402
from .cell import LSTMCell  # noqa: E402
from .lstm import LSTM  # noqa: E402
from .model import LSTMModel  # noqa: E402

__all__ = ["LSTM", "LSTMCell", "LSTMModel", "library_path", "lstm_cell", "lstm_layer",
           "pointwise_capability"]


def pointwise_capability() -> str:
    """The build of the vectorised pointwise kernels this CPU runs ("avx512",
    "avx2" or "default"); ATEN_CPU_CAPABILITY steers it as it steers ATen."""
    return torch.ops.lstm_ext.pointwise_capability()
__version__ = "0.1.0"
