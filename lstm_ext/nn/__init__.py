"""Modules mirroring torch.nn, computed by lstm_ext's ops (``lstm_ext.ops``).

``LSTMCell`` and ``LSTM`` take the constructors, parameters and state dicts of
``torch.nn.LSTMCell`` and ``torch.nn.LSTM``; ``LSTMModel`` is the seed
tutorial's model; ``QuantizedLSTM`` is an LSTM's int8 form for
inference (``lstm_ext.quantize``). All of them script with ``torch.jit.script``.
"""
from .cell import LSTMCell
from .lstm import LSTM
from .model import LSTMModel
from .quantized import QuantizedLSTM

__all__ = ["LSTM", "LSTMCell", "LSTMModel", "QuantizedLSTM"]
