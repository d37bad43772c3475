"""NaN and +-inf flow through every kernel as they flow through torch.nn.

A NaN or infinity is placed in one argument (input, initial state, a weight or
bias element of each gate) and lstm_ext's modules are compared with torch.nn's
on the same weights: outputs, final states and every gradient must have the
same NaN / +inf / -inf pattern, and the finite values must agree within the
suite's tolerances. Paths: the cell at batch 1 (GEMV) and above (GEMM), the
layer at batch 1 and above, and packed (variable-length) sequences. The
in-process tests cover this CPU's kernel build; ``test_other_builds`` reruns
the whole matrix under every other capability build and the ATen-GEMM path.
"""
import itertools
import math
import os
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext

I, H, T = 3, 5, 4
P = 2  # proj_size of the projected path
VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
PATHS = ["cell_b1", "cell_b3", "layer_b1", "layer_b3", "packed_b3", "proj_b3"]
STATE_CASES = [(where, v, 0) for where in ("input", "h0", "c0") for v in VALUES]
PARAM_CASES = [(where, v, gate) for where in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
               for v in VALUES for gate in range(4)]
CASES = STATE_CASES + PARAM_CASES
# The projection's weight (proj_b3 only): one element, in a row of h.
PROJ_CASES = [("weight_hr", v, 0) for v in VALUES]


def _tol(dtype):
    return dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-5, rtol=1e-4)


def _same(name, got, want, dtype):
    """'' if got matches want (pattern of NaN/inf exactly, finite values
    within tolerance), else a description of the first difference."""
    if got is None or want is None:
        return "" if got is None and want is None else f"{name}: one of them is None"
    for label, f in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        if not torch.equal(f(got), f(want)):
            return (f"{name}: {label} at {f(got).nonzero().tolist()[:6]} in lstm_ext, "
                    f"{f(want).nonzero().tolist()[:6]} in torch.nn")
    fin = torch.isfinite(want)
    if not torch.allclose(got[fin], want[fin], **_tol(dtype)):
        return f"{name}: finite values differ by {(got[fin] - want[fin]).abs().max().item():.3g}"
    return ""


def _poison(tensors, where, value, gate):
    t = tensors[where]
    with torch.no_grad():
        if where in ("input", "h0", "c0"):
            idx = (1, 0, 1) if t.dim() == 3 and where == "input" else (0,) * (t.dim() - 1) + (1,)
            t[idx] = value
        elif t.dim() == 2:
            t[gate * H + 1, 1] = value
        else:
            t[gate * H + 1] = value


def case_mismatches(dtype, path, where, value, gate):
    """Runs one case through lstm_ext and torch.nn; returns the differences."""
    torch.manual_seed(0)
    batch = 1 if path.endswith("b1") else 3
    value = VALUES[value]
    if path.startswith("cell"):
        ref = torch.nn.LSTMCell(I, H).to(dtype)
        ours = lstm_ext.LSTMCell(I, H).to(dtype)
        shape = (batch, I)
    else:
        proj = P if path.startswith("proj") else 0
        ref = torch.nn.LSTM(I, H, proj_size=proj).to(dtype)
        ours = lstm_ext.LSTM(I, H, proj_size=proj).to(dtype)
        shape = (T, batch, I)
    params = {n.rstrip("_l0"): p for n, p in ref.named_parameters()}
    state = shape[-2:-1] if path.startswith("cell") else (1, batch)
    inputs = {"input": torch.randn(*shape, dtype=dtype),
              "h0": torch.randn(*state, P if path.startswith("proj") else H, dtype=dtype),
              "c0": torch.randn(*state, H, dtype=dtype)}
    _poison({**inputs, **params}, where, value, gate)
    ours.load_state_dict(ref.state_dict())

    results = []
    for module in (ours, ref):
        x = inputs["input"].clone().requires_grad_(True)
        h0 = inputs["h0"].clone().requires_grad_(True)
        c0 = inputs["c0"].clone().requires_grad_(True)
        if path.startswith("cell"):
            outs = list(module(x, (h0, c0)))
        elif path.startswith("packed"):
            packed = pack_padded_sequence(x, torch.tensor([T, T - 1, 2]))
            out, (h, c) = module(packed, (h0, c0))
            outs = [out.data, h, c]
        else:
            out, (h, c) = module(x, (h0, c0))
            outs = [out, h, c]
        leaves = [x, h0, c0, *module.parameters()]
        g = torch.Generator().manual_seed(1)
        weights = [torch.randn(o.shape, generator=g, dtype=dtype) for o in outs]
        grads = torch.autograd.grad(outs, leaves, weights, allow_unused=True)
        results.append([o.detach() for o in outs] + list(grads))
    # The cell returns (h, c), the layer (output, (h, c)): a name for each.
    outputs = ["h", "c"] if path.startswith("cell") else ["output", "h", "c"]
    names = outputs + ["grad_input", "grad_h0", "grad_c0"] + [
        "grad_" + n for n, _ in ref.named_parameters()]
    assert len(names) == len(results[0])
    return [m for m in (_same(n, a, b, dtype) for n, a, b in zip(names, *results)) if m]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("where,value,gate", CASES)
def test_nan_inf_like_torch_nn(where, value, gate, dtype, path):
    assert case_mismatches(dtype, path, where, value, gate) == []


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("where,value,gate", PROJ_CASES)
def test_nan_inf_in_the_projection_like_torch_nn(where, value, gate, dtype):
    assert case_mismatches(dtype, "proj_b3", where, value, gate) == []


@pytest.mark.parametrize("env", [{"ATEN_CPU_CAPABILITY": "default"},
                                 {"ATEN_CPU_CAPABILITY": "avx2"},
                                 {"LSTM_EXT_GEMM": "aten"}],
                         ids=["default_build", "avx2_build", "aten_gemm"])
def test_other_builds(env):
    """The whole matrix again in a process that runs another kernel build (or
    ATen's GEMMs with separate pointwise passes instead of the step kernels)."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    wanted = env.get("ATEN_CPU_CAPABILITY")
    if wanted == "default" or (wanted == "avx2" and lstm_ext.pointwise_capability() != "default"):
        assert f"({wanted} build)" in done.stdout, done.stdout[-500:]


def main():
    """Runs the whole matrix; prints each mismatch and a count."""
    bad = 0
    matrix = itertools.chain(
        itertools.product(CASES, (torch.float64, torch.float32), PATHS),
        itertools.product(PROJ_CASES, (torch.float64, torch.float32), ["proj_b3"]))
    for (where, value, gate), dtype, path in matrix:
        for m in case_mismatches(dtype, path, where, value, gate):
            bad += 1
            print(f"{where}={value} gate {gate} {dtype} {path}: {m}")
    print(f"{bad} mismatches in {(len(CASES) * len(PATHS) + len(PROJ_CASES)) * 2} cases "
          f"({lstm_ext.pointwise_capability()} build)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
