"""The flat list of per-layer, per-direction tensors that ``LSTM`` and
``QuantizedLSTM`` read in their forward.

TorchScript can index a plain list, but not ``getattr`` with a computed name,
so each module keeps ``_flat_weights``: for every layer and direction, one
entry per name in the class's ``_WEIGHT_KINDS`` (None where the module has no
such tensor), in the order its forward reads them. The list is rebuilt
whenever one of those attributes is set, the module is moved or cast
(``_apply``), or a state dict is loaded.

A module mixes it in before ``nn.Module`` and has ``num_layers`` and
``bidirectional``.
"""
from typing import List, Optional

from torch import Tensor


class FlatWeights:
    _WEIGHT_KINDS = ()  # name prefixes, e.g. ("weight_ih", "weight_hh", ...)
    _flat_weights: List[Optional[Tensor]]

    def _suffixes(self) -> List[str]:
        return ["", "_reverse"] if self.bidirectional else [""]

    def _weight_names(self) -> List[str]:
        return [f"{kind}_l{layer}{suffix}"
                for layer in range(self.num_layers) for suffix in self._suffixes()
                for kind in self._WEIGHT_KINDS]

    def _init_flat_weights(self) -> None:
        self._flat_weights = [getattr(self, n, None) for n in self._weight_names()]

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if hasattr(self, "_flat_weights") and name in self._weight_names():
            self._init_flat_weights()

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        self._init_flat_weights()
        return result

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._init_flat_weights()
