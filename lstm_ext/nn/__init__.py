"""Modules mirroring torch.nn, computed by lstm_ext's ops (``lstm_ext.ops``).

``LSTMCell`` and ``LSTM`` take the constructors, parameters and state dicts of
``torch.nn.LSTMCell`` and ``torch.nn.LSTM``; ``LSTMModel`` is the seed
tutorial's model. All of them script with ``torch.jit.script``.
"""
from .cell import LSTMCell
from .lstm import LSTM
from .model import LSTMModel

__all__ = ["LSTM", "LSTMCell", "LSTMModel"]
