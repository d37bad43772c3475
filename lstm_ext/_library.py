"""Loads the compiled op library so that ``torch.ops.lstm_ext.*`` exist.

The library (``_C.abi3.so``) is a plain shared library: its static
``TORCH_LIBRARY`` registrations run when it is loaded, by Python here or by a
C++ program that links or ``dlopen``s the same file (see ``library_path``).
"""
import importlib.util
import os

import torch


def library_path() -> str:
    """Absolute path of the op library, for C++ programs and ``torch.ops.load_library``.

    ``LSTM_EXT_LIBRARY`` names another build of it to load instead (``make
    test-sanitize`` runs the tests on an AddressSanitizer build this way)."""
    override = os.environ.get("LSTM_EXT_LIBRARY")
    if override:
        if not os.path.isfile(override):
            raise ImportError(f"LSTM_EXT_LIBRARY={override}: no such file")
        return os.path.abspath(override)
    spec = importlib.util.find_spec("lstm_ext._C")
    if spec is None or spec.origin is None or not os.path.exists(spec.origin):
        raise ImportError(
            "lstm_ext's compiled op library (lstm_ext/_C*.so) was not found: build it with "
            "`pip install --no-build-isolation -e .` (or `make install`) in the source tree"
        )
    return spec.origin


def load() -> None:
    path = library_path()
    try:
        torch.ops.load_library(path)
    except OSError as exc:  # undefined symbols: built against another torch
        raise ImportError(
            f"lstm_ext's op library {path} does not load into torch {torch.__version__} "
            f"({str(exc).splitlines()[0]}); it was probably built against another torch "
            "release: rebuild it with `pip install --no-build-isolation -e .`"
        ) from exc
