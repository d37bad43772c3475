"""A shared CPU (csrc/cpu/step_team.h): when a layer op's threads are not all
on a CPU at once, the op finds the CPU contended and falls back to one thread
(thread_fallbacks counts it), with the same results.

The contention is made certain, not hoped for: the child process pins itself
and a busy process to one CPU before torch starts its threads, then asks for
two threads, so that of the three only one runs at a time and a team thread
is off the CPU for a scheduler time slice while the other waits (the case of
two busy processes on a 2-core machine, on one core). Without the busy
process, the two threads alone hand the CPU to each other quickly (OpenMP's
waiting thread sleeps), which is not the case to test. No timing is asserted;
benchmarks/bench_threads.py prints the times.
"""
import os
import subprocess
import sys

import pytest

from helpers import ROOT, TESTS

CHILD = r"""
import os, signal, sys
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
parent = os.getpid()
busy = os.fork()
if busy == 0:  # spins until its parent is gone, however the parent ends
    while os.getppid() == parent:
        pass
    os._exit(0)
import torch
sys.path.insert(0, TESTS)
import lstm_ext

def train_step(model, x, g):
    xi = x.detach().requires_grad_()
    out = model(xi)[0]
    out.backward(g)
    return [out.detach(), xi.grad] + [p.grad for p in model.parameters()]

torch.manual_seed(0)
model = lstm_ext.LSTM(1, 32)
x, g = torch.randn(336, 64, 1), torch.randn(336, 64, 32)
torch.set_num_threads(1)
serial = train_step(model, x, g)
model.zero_grad()
torch.set_num_threads(2)
before = torch.ops.lstm_ext.thread_fallbacks()
strikes = torch.ops.lstm_ext.thread_strikes()
# Until the first fallback (at most 200 steps): a fallback needs two strikes
# within kStrikeWindow calls, and a fixed 20 steps once met 4 strikes spaced
# wider than that (CI's torch 2.11 run, 2026-11-27).
for _ in range(200):
    model.zero_grad()
    got = train_step(model, x, g)
    for a, b in zip(got, serial):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    if torch.ops.lstm_ext.thread_fallbacks() > before:
        break
print("strikes", torch.ops.lstm_ext.thread_strikes() - strikes)
print("fallbacks", torch.ops.lstm_ext.thread_fallbacks() - before)
os.kill(busy, signal.SIGKILL)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_two_threads_on_one_cpu_fall_back_to_one():
    env = dict(os.environ, TESTS=TESTS)
    out = subprocess.run([sys.executable, "-c", "TESTS = __import__('os').environ['TESTS']\n" + CHILD],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    fallbacks = int(out.stdout.split()[-1])
    strikes = int(out.stdout.split()[-3])
    assert fallbacks >= 1, out.stdout
    # The first strike is a lone one: nothing ran in parallel before the
    # baseline (one thread), so no strike came within the window before it
    # (calls_since_strike starts at kStrikeWindow): counted, but no fallback.
    assert strikes >= fallbacks + 1, out.stdout
