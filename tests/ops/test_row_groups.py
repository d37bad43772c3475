"""How a layer's time loop shares its work between threads
(csrc/cpu/layer_steps.h, layer_row_groups): split by batch rows, each thread
running every step of its rows with no per-step synchronisation, where W_hh
fits in each core's cache; else by hidden units at each step. The choice is
shown here without timing (torch.ops.lstm_ext.layer_row_groups says what a
layer call would do); benchmarks/bench_threads.py times it. The results are
the same bits either way.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import layer_args

row_groups = torch.ops.lstm_ext.layer_row_groups
layer_threads = torch.ops.lstm_ext.layer_threads
KIB = 1024


def l2_cache_bytes():
    """This CPU's L2 per core as Linux reports it (what the kernels read
    through sysconf), or None."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * {"K": KIB, "M": KIB * KIB}[size[-1]]
        except (OSError, ValueError, KeyError):
            return None
    return None


@pytest.fixture
def threads():
    """Sets the thread count for one test (restored after)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_one_thread_is_one_group(threads):
    threads(1)
    assert row_groups(32, [32] * 50, 64 * KIB) == [0, 32]


def test_small_weights_split_the_rows(threads):
    threads(2)
    # (32, 32, 64, 50): W_hh is 4 * 64 * 64 floats, 64 KiB.
    assert row_groups(32, [32] * 50, 64 * KIB) == [0, 16, 32]
    threads(3)
    assert row_groups(32, [32] * 5, 64 * KIB) == [0, 11, 22, 32]
    # At least 4 rows a group: fewer groups than threads where the batch is small.
    threads(4)
    assert row_groups(9, [9] * 5, 64 * KIB) == [0, 5, 9]
    assert row_groups(7, [7] * 5, 64 * KIB) == [0, 7]
    assert row_groups(0, [], 64 * KIB) == [0, 0]


def test_large_weights_split_the_units(threads):
    threads(2)
    # (64, 512, 512): 4 MiB of W_hh, more than any core's L2 keeps beside the rest.
    assert row_groups(64, [64] * 50, 4096 * KIB) == [0, 64]
    # Above 256 KiB, only with 16 rows or more per thread.
    assert row_groups(31, [31] * 5, 300 * KIB) == [0, 31]
    l2 = l2_cache_bytes()
    if l2 is not None:
        assert row_groups(32, [32] * 5, l2 // 2) == [0, 16, 32]
        assert row_groups(32, [32] * 5, l2 // 2 + 1) == [0, 32]


def test_groups_are_balanced_by_the_steps_their_rows_run(threads):
    threads(2)
    # Rows run 7, 6, 5, 4, 4, 3, 3, 2, 2 steps (36): the first 3 rows run 18.
    assert row_groups(9, [9, 9, 7, 5, 3, 2, 1], 64 * KIB) == [0, 3, 9]
    threads(4)
    bounds = row_groups(64, sorted(range(1, 65), reverse=True), 64 * KIB)
    assert bounds[0] == 0 and bounds[-1] == 64 and len(bounds) == 5
    assert all(a < b for a, b in zip(bounds, bounds[1:]))


def test_small_calls_run_on_no_more_threads_than_their_rows_use(threads):
    # csrc/cpu/layer_steps.h, layer_threads: where the rows split into fewer
    # groups than threads and the forward's work is under 10 MFLOP a thread,
    # the call runs on max(groups, work / 10 MFLOP) threads.
    small = (32, 32, 64, [32] * 50, 64 * KIB)  # 8 groups; 79 MFLOP
    threads(16)
    assert layer_threads(*small) == 8
    assert layer_threads(16, 32, 64, [16] * 50, 64 * KIB) == 4  # 4 groups; 39 MFLOP
    assert layer_threads(16, 32, 64, [16] * 100, 64 * KIB) == 8  # 79 MFLOP
    # Work enough for every thread: all of them.
    assert layer_threads(32, 32, 64, [32] * 200, 64 * KIB) == 16
    # The units split (one group) and a row per thread keep every thread.
    assert layer_threads(64, 512, 512, [64] * 50, 4096 * KIB) == 16
    assert layer_threads(64, 1, 32, [64] * 336, 16 * KIB) == 16
    threads(12)
    assert layer_threads(*small) == 8
    # Up to 2 threads, and where the groups take every thread: no cap.
    for n in (1, 2, 8):
        threads(n)
        assert layer_threads(*small) == n


def test_a_capped_call_leaves_the_thread_count_as_it_was(threads):
    threads(8)
    args = layer_args(5, 8, 4, 16, dtype=torch.float32)
    assert layer_threads(8, 4, 16, [8] * 5, 4 * 16 * 16 * 4) == 2
    torch.ops.lstm_ext.lstm_layer_inference(*args, None, None)
    out, hy, cy, gates, cs = torch.ops.lstm_ext.lstm_layer_forward(*args, None, None)
    torch.ops.lstm_ext.lstm_layer_backward(out, hy, cy, *args[:5], out, gates, cs, None, None,
                                           [True] * 7)
    # 1 where a contended CPU sent the call to one thread (step_team.h).
    assert torch.ops.lstm_ext.last_op_threads() in (1, 2)
    assert torch.get_num_threads() == 8
    assert torch.ones(1000, 1000).sum().item() == 1e6  # ATen's own ops still run


def test_the_cap_can_be_turned_off():
    code = ("import torch, lstm_ext; torch.set_num_threads(16); "
            "print(torch.ops.lstm_ext.layer_threads(32, 32, 64, [32] * 50, 65536))")
    env = dict(os.environ, LSTM_EXT_THREAD_CAP="0")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["16"]


@pytest.mark.parametrize("bad, message", [
    ((-1, [], 0), "expected batch >= 0, but got -1"),
    ((2 ** 40, [1], 0), "expected batch at most 2\\^24, but got 1099511627776"),
    ((4, [5], 0), r"expected batch_sizes\[0\] in \[0, 4\]"),
    ((4, [3, 4], 0), r"expected batch_sizes\[1\] in \[0, 3\] \(non-increasing"),
])
def test_bad_arguments(bad, message):
    with pytest.raises(RuntimeError, match="layer_row_groups: " + message):
        row_groups(*bad)
    batch, sizes, weight_bytes = bad
    with pytest.raises(RuntimeError, match="layer_threads: " + message):
        layer_threads(batch, 1, 8, sizes, weight_bytes)
    with pytest.raises(RuntimeError, match="layer_threads: expected hidden_size >= 0"):
        layer_threads(4, 1, -8, [4], 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("inputs", [5, 12])  # projection in the step kernel, and a GEMM's
def test_split_rows_give_the_same_bits(threads, dtype, inputs):
    # Rows ending at every step (23, 22, ..., 1: every group of rows gets to
    # a step where only its first row runs), a batch the groups split
    # unevenly, and a hidden size with a partial vector: every thread count
    # gives the bits of one.
    steps, batch, hidden = 23, 23, 20
    lengths = torch.arange(steps, 0, -1)
    args = layer_args(steps, batch, inputs, hidden, dtype=dtype) + [lengths, None]
    sizes = [int((lengths > t).sum()) for t in range(steps)]
    weight_bytes = 4 * hidden * hidden * args[0].element_size()

    def run():
        out, hy, cy, gates, cs = torch.ops.lstm_ext.lstm_layer_forward(*args)
        g = torch.Generator().manual_seed(5)
        grad_out, grad_hy, grad_cy = (torch.randn(t.shape, dtype=dtype, generator=g)
                                      for t in (out, hy, cy))
        grads = torch.ops.lstm_ext.lstm_layer_backward(
            grad_out, grad_hy, grad_cy, *args[:5], out, gates, cs, lengths, None, [True] * 7)
        inference = torch.ops.lstm_ext.lstm_layer_inference(*args)
        return [out, hy, cy, gates, cs, *inference, *(t for t in grads if t is not None)]

    threads(1)
    want = run()
    for n in (2, 3, 5, 8):
        threads(n)
        assert len(row_groups(batch, sizes, weight_bytes)) == min(n, batch // 4) + 1
        # With 8 the call runs on its 5 groups' threads alone (layer_threads).
        assert layer_threads(batch, inputs, hidden, sizes, weight_bytes) == min(n, 5)
        got = run()
        # 1 where a contended CPU sent the calls to one thread (step_team.h).
        assert torch.ops.lstm_ext.last_op_threads() in (1, min(n, 5))
        for i, (a, b) in enumerate(zip(want, got)):
            assert torch.isfinite(a).all()
            assert torch.equal(a, b), f"result {i}: {n} threads differ from one"
