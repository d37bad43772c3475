"""The forecasting tests' marker ``slow``: tests that start several processes
(torchrun) run only with LSTM_EXT_SLOW=1, to keep the default suite quick."""
import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs only with LSTM_EXT_SLOW=1 (tens of seconds)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LSTM_EXT_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set LSTM_EXT_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
