"""The installed package serves C++ projects outside this repository:
``find_package(lstm_ext)`` (lstm_extConfig.cmake in the package, next to
``find_package(Torch)``), the header declaring the ops, and the op library,
stripped of debug information. A tiny CMake project (examples/cpp/consumer)
is built against the package as installed (the editable tree here; a wheel in
CI the same way) and gives Python's numbers.

Its build is cached under examples/cpp/build/consumer (helpers.cmake_build)."""
import os
import re
import subprocess
import zipfile

import numpy as np
import pytest
import torch

import lstm_ext
import lstm_ext.export
from helpers import ROOT, cmake_build, damaged

PACKAGE = os.path.dirname(os.path.abspath(lstm_ext.__file__))
BUILD = os.path.join(ROOT, "examples", "cpp", "build", "consumer")


def test_package_carries_header_and_cmake_config():
    prefix = lstm_ext.export.cmake_prefix_path
    config = os.path.join(prefix, "lstm_ext", "lstm_extConfig.cmake")
    version = os.path.join(prefix, "lstm_ext", "lstm_extConfigVersion.cmake")
    assert os.path.isfile(config) and os.path.isfile(version)
    with open(version) as f:
        assert f'set(PACKAGE_VERSION "{lstm_ext.__version__}")' in f.read()
    for name in ("model_file.h", "zip_check.h"):
        assert os.path.isfile(os.path.join(PACKAGE, "include", "lstm_ext", name)), name
    header = os.path.join(PACKAGE, "include", "lstm_ext", "lstm_ext.h")
    with open(header) as f:
        assert f'#define LSTM_EXT_VERSION "{lstm_ext.__version__}"' in f.read()
    with open(os.path.join(PACKAGE, "include", "lstm_ext", "ops.h")) as f:
        declared = set(re.findall(r'\{"lstm_ext::(\w+)"\}', f.read()))
    assert declared and all(hasattr(torch.ops.lstm_ext, name) for name in declared), declared


@pytest.mark.skipif(bool(os.environ.get("LSTM_EXT_LIBRARY")) or
                    os.environ.get("LSTM_EXT_DEBUG", "0") not in ("", "0"),
                    reason="another build of the op library, or a debug build")
def test_op_library_has_no_debug_info():
    sections = subprocess.run(["readelf", "-S", "-W", lstm_ext.library_path()],
                              capture_output=True, text=True, check=True).stdout
    assert ".debug_info" not in sections, "a release build strips debug info (setup.py)"
    assert os.path.getsize(lstm_ext.library_path()) < 5 * 2 ** 20


def test_op_library_links_no_python():
    """A C++ program loads the very library Python does (_C.abi3.so)."""
    deps = subprocess.run(["ldd", lstm_ext.library_path()], capture_output=True, text=True,
                          check=True).stdout
    assert "libtorch_cpu" in deps, deps
    assert "libpython" not in deps and "torch_python" not in deps, deps


def values(n, scale):
    return torch.sin(torch.arange(n, dtype=torch.float64) * scale).float()


def expected_sums():
    T, B, I, H = 5, 3, 4, 6
    out, hy, cy, _, _ = torch.ops.lstm_ext.lstm_layer_forward(
        values(T * B * I, 0.7).reshape(T, B, I), values(B * H, 0.3).reshape(B, H) * 0.5,
        values(B * H, 0.5).reshape(B, H) * 0.5, values(4 * H * I, 1.1).reshape(4 * H, I) * 0.4,
        values(4 * H * H, 1.3).reshape(4 * H, H) * 0.4, values(4 * H, 1.7) * 0.1,
        values(4 * H, 1.9) * 0.1, None)
    return [t.sum().item() for t in (out, hy, cy)]


# 43 s here (--durations); with it the default suite took 15:07 in a fresh
# clone (CI's 15-minute aim): marked slow, run by make test-slow and CI.
@pytest.mark.slow
def test_cmake_project_builds_against_the_installed_package(tmp_path):
    prefix = f"{torch.utils.cmake_prefix_path};{lstm_ext.export.cmake_prefix_path}"
    configured = cmake_build(os.path.join(ROOT, "examples", "cpp", "consumer"), BUILD,
                             f"-DCMAKE_PREFIX_PATH={prefix}")
    assert f"lstm_ext {lstm_ext.__version__}: {lstm_ext.library_path()}" in configured
    app = os.path.join(BUILD, "lstm_ext_consumer")
    needed = subprocess.run(["readelf", "-d", app], capture_output=True, text=True).stdout
    assert "_C.abi3.so" in needed, "linked --no-as-needed: the ops register at start-up"
    run = subprocess.run([app], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip().splitlines()[0]
    assert line.startswith(f"lstm_ext {lstm_ext.__version__} layer: "), line
    got = [float(v) for v in line.split(": ")[1].split(",")]
    np.testing.assert_allclose(got, expected_sums(), rtol=1e-6, atol=1e-5)
    missing = subprocess.run([app, os.path.join(BUILD, "missing.pt2")], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    # lstm_ext/model_file.h, the package's check before a model loads.
    flipped = tmp_path / "flipped.pt2"
    with zipfile.ZipFile(flipped, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("model/data/0", bytes(range(256)) * 4)
    damaged(flipped, "flip")(flipped)
    done = subprocess.run([app, flipped], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip() == (f"lstm_ext_consumer: cannot load '{flipped}': a damaged zip "
                                   "archive (entry 'model/data/0': Bad CRC-32)"), done.stderr
