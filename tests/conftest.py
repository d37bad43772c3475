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


# The marker `slow`: tests of tens of seconds to minutes (several processes
# under torchrun; a real build of the op library) that the default suite skips
# to stay under 15 minutes on 2 cores. LSTM_EXT_SLOW=1 runs them:
# `make test-slow`, which CI (.ci/run) runs after `make test`.
def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs only with LSTM_EXT_SLOW=1 (make test-slow)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LSTM_EXT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set LSTM_EXT_SLOW=1 to run (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=[torch.float64, torch.float32], ids=["f64", "f32"])
def dtype(request):
    return request.param
