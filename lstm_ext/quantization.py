"""int8 dynamic quantization for inference: ``quantize(model)``.

``quantize(model)`` returns a new module (``model`` is left untouched) in
which every ``lstm_ext.LSTM`` and ``torch.nn.LSTM`` is a
``lstm_ext.nn.QuantizedLSTM``: its weights int8 (symmetric, per output
channel), biases fused (``b_ih + b_hh``, float32), computed by the C++ op
``lstm_layer_forward_int8`` (VNNI/AMX int8 products). ``LSTMModel`` keeps its
Linear head in float32. The result is in eval mode, scripts with
``torch.jit.script`` and exports with ``lstm_ext.export.export_pt2``. LSTMs
with projections (``proj_size``) are refused.

Numerics. Weights: ``W[j] ~ W_q[j] * s_W[j]``, ``s_W[j] = max|W[j]| / 127``,
so ``|W - Ŵ| <= s_W / 2`` elementwise. Activations: at each step, each row of
x and of h_{t-1} is quantized the same way on its own (``s_a = max|a| / 127``,
8 bits, offset to uint8 for the u8 x s8 instructions), the int32 sums are
exact, then dequantized, biased and run through the cell in float32. A row
holding NaN or inf is not quantized but summed in float32 against Ŵ, so NaN
and inf reach the outputs as in torch.nn.LSTM.

The bound. For one step from the same state, a pre-activation's error is
(|a Ŵ - a W| <= |a||W - Ŵ| + |a - â||Ŵ|, with |Ŵ| <= max|W[j]|):

    |Δpre_j| <= E_j = (||x||_1 + K_I max|x|) max|W_ih[j]| / 254
                    + (||h||_1 + K_H max|h|) max|W_hh[j]| / 254

(worst case, all roundings aligned), and the step's outputs
(sigmoid' <= 1/4, tanh' <= 1, |gates| <= 1):

    |Δc| <= |c_{t-1}| E_f / 4 + E_i / 4 + E_g,     |Δh| <= E_o / 4 + |Δc|.

tests/ops/test_int8.py checks these per step against the float32 op. The
roundings are in fact independent and of either sign, so the typical error is
about sqrt(K) times smaller than E_j: sigma_j = sqrt(sum_k a_k^2 s_W[j]^2 +
sum_k Ŵ_jk^2 s_a^2) / sqrt(12). Over a sequence the errors of successive steps
add up through c (damped by f < 1) and feed back through h. Stated bound for
whole sequences (tested in tests/nn/test_quantize.py on torch.nn.LSTM's
initialisation, U(-1/sqrt(H), 1/sqrt(H)), unit-normal inputs, 1-3 layers,
both directions): max |output_int8 - output_float32| <= MODULE_BOUND, and
max |h_n|, |c_n| errors likewise; measured values are in README.md (int8
section).
"""
import copy
from typing import Dict, Optional

from torch import nn

from .nn.lstm import LSTM
from .nn.quantized import QuantizedLSTM, quantize_weight

# The tested bound on max |int8 output - float32 output| for modules with
# torch.nn.LSTM's initialisation and unit-normal inputs (see above).
MODULE_BOUND = 0.05

__all__ = ["MODULE_BOUND", "QuantizedLSTM", "quantize", "quantize_weight"]


def _is_lstm(module: nn.Module) -> bool:
    return isinstance(module, (LSTM, nn.LSTM)) and not isinstance(module, QuantizedLSTM)


def _replace(module: nn.Module, done: Optional[Dict[int, nn.Module]] = None) -> int:
    """Replaces every LSTM below ``module`` in place; returns how many. Every
    name is visited (``named_children`` yields a module held under two names
    once, which left the second a float LSTM): an LSTM held twice becomes one
    QuantizedLSTM held twice."""
    done = {} if done is None else done
    count = 0
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        if _is_lstm(child):
            if id(child) not in done:
                done[id(child)] = QuantizedLSTM.from_float(child)
                count += 1
            setattr(module, name, done[id(child)])
        elif id(child) not in done:
            done[id(child)] = child
            count += _replace(child, done)
    return count


def quantize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for int8 inference, in eval mode: each
    ``lstm_ext.LSTM`` / ``torch.nn.LSTM`` in it (or ``model`` itself) becomes a
    ``QuantizedLSTM`` (int8 weights, per output channel; activations quantized
    per row and step); everything else is copied as it is. ``model`` is not
    changed. Raises ValueError if ``model`` holds no LSTM or one with
    ``proj_size``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize: expected a torch.nn.Module, but got {type(model).__name__}")
    if _is_lstm(model):
        return QuantizedLSTM.from_float(model)
    copied = copy.deepcopy(model)
    if _replace(copied) == 0:
        raise ValueError(f"quantize: {type(model).__name__} holds no lstm_ext.LSTM or "
                         "torch.nn.LSTM to quantize")
    return copied.eval()
