"""The seed tutorial's state dicts, loaded into lstm_ext's modules.

The tutorial's cell holds one ``nn.Linear(input + hidden, hidden)`` per gate
(``Wi``, ``Wf``, ``Wc``, ``Wo``) acting on ``cat(x, h)``; its model holds that
cell as ``lstm_cell`` and a linear head ``fc``. ``LSTMCell`` and ``LSTMModel``
accept such state dicts through ``load_tutorial_cell``.
"""
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

# The seed tutorial's cell: one nn.Linear(input + hidden, hidden) per gate,
# in torch.nn.LSTM's gate order (i, f, g, o).
TUTORIAL_GATES = ("Wi", "Wf", "Wc", "Wo")
PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def convert_tutorial_state_dict(state_dict: Dict[str, Tensor], prefix: str, input_size: int,
                                hidden_size: int) -> None:
    """Rewrites, in place, a tutorial cell's ``{prefix}W?.weight/bias`` keys as
    ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (``bias_hh`` zero)."""
    weights, biases = [], []
    for gate in TUTORIAL_GATES:
        w = state_dict.pop(prefix + gate + ".weight")
        expected = (hidden_size, input_size + hidden_size)
        if tuple(w.shape) != expected:
            raise ValueError(
                f"tutorial state dict: expected {prefix}{gate}.weight of shape {list(expected)} "
                f"(hidden_size, input_size + hidden_size), but got {list(w.shape)}"
            )
        weights.append(w)
        b = state_dict.pop(prefix + gate + ".bias", None)
        if b is not None:
            biases.append(b)
    state_dict[prefix + "weight_ih"] = torch.cat([w[:, :input_size] for w in weights])
    state_dict[prefix + "weight_hh"] = torch.cat([w[:, input_size:] for w in weights])
    if biases:
        if len(biases) != len(TUTORIAL_GATES):
            raise ValueError(f"tutorial state dict: some of {prefix}W?.bias are missing")
        state_dict[prefix + "bias_ih"] = torch.cat(biases)
        state_dict[prefix + "bias_hh"] = torch.zeros_like(state_dict[prefix + "bias_ih"])


def load_tutorial_cell(state_dict: Dict[str, Tensor], prefix: str, input_size: int,
                       hidden_size: int, error_msgs: List[str],
                       rename: Optional[Callable[[str], str]] = None) -> bool:
    """For a module's ``_load_from_state_dict``: if ``state_dict`` holds a
    tutorial cell at ``prefix``, converts it in place (``rename`` maps each
    parameter name to the key it is to have; by default ``prefix + name``).
    Returns False, the problem added to ``error_msgs``, if it does not fit;
    True otherwise (also when there is no tutorial cell)."""
    if prefix + TUTORIAL_GATES[0] + ".weight" not in state_dict:
        return True
    try:
        convert_tutorial_state_dict(state_dict, prefix, input_size, hidden_size)
    except (KeyError, ValueError) as exc:
        error_msgs.append(str(exc))
        return False
    if rename is not None:
        for name in PARAMETERS:
            if prefix + name in state_dict:
                state_dict[rename(name)] = state_dict.pop(prefix + name)
    return True
