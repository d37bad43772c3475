"""Loaded by pytest before any test module, in every directory below tests/:
the environment the op library must see when it loads, and shared fixtures.
What tests share besides is in helpers.py (tolerances, argument makers, the
sample inputs of each op)."""
import os

# Before the op library loads: every buffer the kernels allocate starts as NaN
# (and c10's allocator junk-fills fresh blocks), so that a kernel reading
# memory it never wrote shows as NaN in a result (NaN propagates like torch.nn).
os.environ.setdefault("LSTM_EXT_POISON", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import lstm_ext  # noqa: E402, F401  (loads the op library)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request):
    return request.param
