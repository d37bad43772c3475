"""The vector kernels never run a build the CPU cannot execute, whatever
ATEN_CPU_CAPABILITY asks: ATen reports AVX512 for ATEN_CPU_CAPABILITY=avx512
on any CPU, and on an AVX2-only AMD EPYC our AVX-512 kernels died of SIGILL.
Each case runs in a subprocess (the build is chosen once per process) and
must run a float32, a bf16 and an int8 layer there."""
import os
import subprocess
import sys

import pytest

from helpers import ROOT

CODE = """
import torch, lstm_ext
x = torch.randn(4, 3, 24)
m = lstm_ext.LSTM(24, 40)
m(x); m.to(torch.bfloat16)(x.to(torch.bfloat16))
lstm_ext.quantize(torch.nn.LSTM(24, 40))(x)
print(lstm_ext.pointwise_capability(), torch.ops.lstm_ext.bf16_kernel_build(),
      torch.ops.lstm_ext.int8_kernel_build())
"""


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine != "x86_64",
                    reason="x86-64 Linux: CPU flags from /proc/cpuinfo")
@pytest.mark.parametrize("asked", ["avx512", "avx2", "default"])
def test_a_build_runs_only_where_the_cpu_has_its_instructions(asked):
    done = subprocess.run([sys.executable, "-c", CODE],
                          env=dict(os.environ, ATEN_CPU_CAPABILITY=asked), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    pointwise, bf16, int8 = done.stdout.split()
    flags = cpu_flags()
    avx512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    avx2 = {"avx2", "fma", "f16c"} <= flags
    wanted = {"avx512": "avx512" if avx512 else ("avx2" if avx2 else "default"),
              "avx2": "avx2" if avx2 else "default", "default": "default"}[asked]
    assert pointwise == wanted
    if not avx512 or asked != "avx512":
        assert "avx512" not in bf16 + int8 and "amx" not in bf16 + int8, (bf16, int8)
