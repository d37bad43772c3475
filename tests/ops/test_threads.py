"""Concurrency of the ops: Python threads sharing one module, and
torch.jit.fork tasks, must get results bitwise equal to the same calls made one
after another (processes: test_processes.py).

The shared state a race would corrupt is the buffer cache
(csrc/cpu/buffer_cache.cpp: blocks of 1 MiB and more are recycled between
calls, so the large shapes here go through it) and the kernels' per-thread
scratch (thread_local, in csrc/cpu/). Every buffer starts as NaN under the
suite's LSTM_EXT_POISON=1, so a kernel reading a block another call is still
filling shows as a NaN or a changed value. The kernels give the same bits for
any thread count (checked below), so bitwise is the right test.
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple

import pytest
import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from lstm_ext.forecast.forecaster import Forecaster

N_THREADS = 6
INPUT, HIDDEN = 32, 128
# (seq_len, batch): the first has gate buffers of 20*32*4*128 values (1.3 MiB
# in float32), which the buffer cache recycles; the others are small.
SHAPES = [(20, 32), (7, 5), (3, 2)]


def shape_of(k: int) -> Tuple[int, int]:
    # Each thread (k = t, t + N_THREADS, ...) rotates through the shapes, so
    # that threads run different shapes at the same time.
    return SHAPES[(k + k // N_THREADS) % len(SHAPES)]


def gen(k: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 + k)


def run_concurrently(fn, n_calls: int):
    """``fn(k)`` for k in range(n_calls): first one after another, then on
    N_THREADS threads released together (thread t makes the calls k = t,
    t + N_THREADS, ...). Returns (serial, threaded), indexed by k."""
    serial = [fn(k) for k in range(n_calls)]
    threaded = [None] * n_calls
    barrier = threading.Barrier(N_THREADS)

    def worker(t):
        barrier.wait(timeout=60)
        for k in range(t, n_calls, N_THREADS):
            threaded[k] = fn(k)

    with ThreadPoolExecutor(N_THREADS) as pool:
        for f in [pool.submit(worker, t) for t in range(N_THREADS)]:
            f.result()  # re-raises a thread's exception
    return serial, threaded


def flatten(result) -> List[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    return [t for part in result for t in flatten(part)]


def assert_bitwise(serial, threaded):
    assert len(serial) == len(threaded)
    for k, (want, got) in enumerate(zip(serial, threaded)):
        want, got = flatten(want), flatten(got)
        assert len(want) == len(got), f"call {k}: {len(got)} results, expected {len(want)}"
        for i, (w, g) in enumerate(zip(want, got)):
            # NaN would mean a poisoned (never written) buffer reached a result;
            # it would fail torch.equal too, but less clearly.
            assert torch.isfinite(w).all(), f"call {k}, result {i}: non-finite serial result"
            assert w.dtype == g.dtype and w.shape == g.shape, f"call {k}, result {i}"
            if not torch.equal(w, g):
                diff = (w - g).abs().max().item()
                raise AssertionError(f"call {k} (shape {shape_of(k)}), result {i}: threaded "
                                     f"result differs from the serial one (max |diff| {diff:g})")
    # The calls really differ (so that equal results are not trivially equal).
    assert not torch.equal(flatten(serial[0])[0], flatten(serial[N_THREADS])[0])


def detached(tensors):
    return [t.detach() for t in tensors]


# -- Python threads sharing one module -------------------------------------------------


# (batch, input, hidden, seq_len) of the thread-count test: the modules'
# default shape above, the main job's (its weight gradients' sums are 21504
# long: oneDNN split them between threads, and the bits changed with 2, 3, 8
# and 16 threads, before csrc/cpu/backward_products.h), a long univariate
# series (changed from 4 threads on; and MKL's dx with 3) and a small layer.
# (100, 4, 3, 5): every product small enough to run at once (backward_products.cpp)
# (2, 32, 128, 3) and (3, 32, 128, 2): an input projection of 6 rows, which
# MKL split between 2 threads otherwise than it computed it on one (gemm.cpp;
# on an AMD EPYC, where it serves every float32 product).
LAYER_SHAPES = [(32, INPUT, HIDDEN, 20), (64, 1, 32, 336), (4, 1, 8, 2000), (32, 32, 64, 50),
                (100, 4, 3, 5), (2, INPUT, HIDDEN, 3), (3, INPUT, HIDDEN, 2)]
THREAD_COUNTS = (1, 2, 3, 4, 8)


def results_by_thread_count(run):
    threads = torch.get_num_threads()
    results = {}
    try:
        for n in THREAD_COUNTS:
            torch.set_num_threads(n)
            results[n] = run()
    finally:
        torch.set_num_threads(threads)
    return results


def assert_same_bits(results):
    for n, got in results.items():
        for i, (a, b) in enumerate(zip(results[1], got)):
            assert torch.isfinite(a).all()
            assert torch.equal(a, b), f"result {i}: {n} threads differ from one"


@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernels_give_the_same_bits_for_any_thread_count(dtype, shape):
    # What makes the bitwise comparisons below meaningful: forked children and
    # DataLoader workers run on one thread, the parent on several; and a
    # training run must not change when the kernels fall back to one thread
    # on a busy CPU (step_team.h).
    batch, input_size, hidden, steps = shape
    m = lstm_ext.LSTM(input_size, hidden, num_layers=2, dtype=dtype)
    x = torch.randn(steps, batch, input_size, dtype=dtype, generator=gen(0)).requires_grad_()

    def run():
        out, (h, c) = m(x)
        return [out, h, c, *torch.autograd.grad(out.sum() + c.sum(), [x, *m.parameters()])]

    assert_same_bits(results_by_thread_count(run))


@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_inference_gives_the_same_bits_for_any_thread_count(dtype, shape):
    # The inference op (no_grad) has its own time loop and keeps no gates.
    batch, input_size, hidden, steps = shape
    m = lstm_ext.LSTM(input_size, hidden, num_layers=2, dtype=dtype).eval()
    x = torch.randn(steps, batch, input_size, dtype=dtype, generator=gen(0))

    def run():
        with torch.no_grad():
            out, (h, c) = m(x)
        return [out, h, c]

    assert_same_bits(results_by_thread_count(run))


@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bf16_gives_the_same_bits_for_any_thread_count(shape):
    # bf16: the step kernels split hidden units between threads, never a sum.
    # Where ATen's bf16 GEMM is scalar (no avx512bw: this project's AVX2
    # EPYC), the products after the backward's loop run in float32 in pieces
    # fixed by the shapes (csrc/cpu/bf16/lstm_bf16.cpp, float_products); before,
    # one MKL call each on all threads, which on Intel CPUs splits a weight
    # gradient's long sum by thread count. Where it is oneDNN's (AVX512-BF16,
    # AMX), those products are oneDNN bf16 GEMMs on all threads, which may
    # split such sums too: not claimed there, so not asserted.
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("ATen's bf16 GEMM is oneDNN's here: its thread splits are not ours")
    batch, input_size, hidden, steps = shape
    m = lstm_ext.LSTM(input_size, hidden, num_layers=2, dtype=torch.bfloat16)
    x = torch.randn(steps, batch, input_size, dtype=torch.bfloat16,
                    generator=gen(0)).requires_grad_()

    def run():
        with torch.no_grad():
            inferred = m(x.detach())[0]
        out, (h, c) = m(x)
        loss = out.float().sum() + c.float().sum()
        return [inferred, out, h, c, *torch.autograd.grad(loss, [x, *m.parameters()])]

    assert_same_bits(results_by_thread_count(run))


@pytest.mark.parametrize("batch", [6, 11, 27, 4096])
def test_cell_gives_the_same_bits_for_any_thread_count(dtype, batch):
    # The cell's weight gradients sum over the batch: 4096 rows split between
    # threads changed the bits with 2 and 4 threads before. A few rows (6, 11,
    # 27): MKL split the gate products by rows with 2 or 8 threads (gemm.cpp).
    cell = lstm_ext.LSTMCell(32, 64, dtype=dtype)
    x = torch.randn(batch, 32, dtype=dtype, generator=gen(1)).requires_grad_()
    state = [torch.randn(batch, 64, dtype=dtype, generator=gen(2)) for _ in range(2)]

    def run():
        h, c = cell(x, (state[0], state[1]))
        return [h, c, *torch.autograd.grad(h.sum() + c.sum(), [x, *cell.parameters()])]

    assert_same_bits(results_by_thread_count(run))


def test_threads_forward(dtype):
    m = lstm_ext.LSTM(INPUT, HIDDEN, num_layers=2, dtype=dtype).eval()

    def call(k):
        steps, batch = shape_of(k)
        g = gen(k)
        x = torch.randn(steps, batch, INPUT, dtype=dtype, generator=g)
        hx = (torch.randn(2, batch, HIDDEN, dtype=dtype, generator=g),
              torch.randn(2, batch, HIDDEN, dtype=dtype, generator=g))
        with torch.no_grad():
            out, (h, c) = m(x, hx if k % 2 else None)
        return out, h, c

    assert_bitwise(*run_concurrently(call, N_THREADS * 20))


def test_threads_forward_backward(dtype):
    # Gradients with torch.autograd.grad (not .backward(), which would
    # accumulate into the shared modules' .grad).
    m = lstm_ext.LSTM(INPUT, HIDDEN, num_layers=2, dtype=dtype)
    params = list(m.parameters())

    def call(k):
        steps, batch = shape_of(k)
        g = gen(k)
        x = torch.randn(steps, batch, INPUT, dtype=dtype, generator=g).requires_grad_()
        h0 = torch.randn(2, batch, HIDDEN, dtype=dtype, generator=g).requires_grad_()
        c0 = torch.randn(2, batch, HIDDEN, dtype=dtype, generator=g).requires_grad_()
        out, (h, c) = m(x, (h0, c0))
        w = [torch.randn(t.shape, dtype=dtype, generator=g) for t in (out, h, c)]
        loss = (out * w[0]).sum() + (h * w[1]).sum() + (c * w[2]).sum()
        grads = torch.autograd.grad(loss, [x, h0, c0, *params])
        return detached([out, h, c]), grads

    assert_bitwise(*run_concurrently(call, N_THREADS * 8))


def test_threads_packed(dtype):
    m = lstm_ext.LSTM(INPUT, HIDDEN, bidirectional=True, batch_first=True, dtype=dtype)
    params = list(m.parameters())

    def call(k):
        steps, batch = shape_of(k)
        g = gen(k)
        x = torch.randn(batch, steps, INPUT, dtype=dtype, generator=g).requires_grad_()
        lengths = torch.randint(1, steps + 1, (batch,), generator=g)
        lengths[int(torch.randint(batch, (1,), generator=g))] = steps
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, c) = m(packed)
        loss = (out.data * torch.randn(out.data.shape, dtype=dtype, generator=g)).sum() + h.sum()
        grads = torch.autograd.grad(loss, [x, *params])
        return detached([out.data, h, c]), grads

    assert_bitwise(*run_concurrently(call, N_THREADS * 6))


def test_threads_batch_one(dtype):
    m = lstm_ext.LSTM(INPUT, HIDDEN, num_layers=2, dtype=dtype)
    params = list(m.parameters())

    def call(k):
        g = gen(k)
        steps = 1 + (7 * k) % 40
        # batch 1, and unbatched (seq_len, input_size) input every other call
        shape = (steps, 1, INPUT) if k % 2 else (steps, INPUT)
        x = torch.randn(shape, dtype=dtype, generator=g).requires_grad_()
        out, (h, c) = m(x)
        grads = torch.autograd.grad((out * out).sum() + c.sum(), [x, *params])
        return detached([out, h, c]), grads

    assert_bitwise(*run_concurrently(call, N_THREADS * 10))


def test_threads_cell_stepping(dtype):
    cell = lstm_ext.LSTMCell(INPUT, HIDDEN, dtype=dtype)
    params = list(cell.parameters())

    def call(k):
        steps, batch = shape_of(k)
        g = gen(k)
        xs = torch.randn(steps, batch, INPUT, dtype=dtype, generator=g).requires_grad_()
        state = None
        hs = []
        for t in range(steps):
            state = cell(xs[t], state)
            hs.append(state[0])
        out = torch.stack(hs)
        grads = torch.autograd.grad((out * out).sum() + state[1].sum(), [xs, *params])
        return detached([out, state[1]]), grads

    assert_bitwise(*run_concurrently(call, N_THREADS * 6))


def test_threads_scripted_forecaster_step(dtype):
    horizon = 3
    model = lstm_ext.LSTMModel(1, 64, horizon, num_layers=2, dtype=dtype)
    forecaster = torch.jit.script(
        Forecaster(model, scale=0.5, target_scale=2.0, window=12, horizon=horizon).eval())

    def call(k):
        g = gen(k)
        batch = 1 + k % 8
        series = torch.randn(12, batch, 1, dtype=dtype, generator=g).cumsum(0)
        state = None
        preds = []
        with torch.no_grad():
            for t in range(series.shape[0]):
                pred, state = forecaster.step(series[t], state)
                preds.append(pred)
        return preds, state

    for k in range(3):  # let the profiling executor settle before the serial run
        call(k)
    serial, threaded = run_concurrently(call, N_THREADS * 6)
    assert_bitwise(serial, threaded)
    # step equals forward on the same values (so the results are real forecasts)
    series = torch.randn(12, 3, 1, dtype=dtype, generator=gen(99)).cumsum(0)
    state = None
    with torch.no_grad():
        for t in range(12):
            pred, state = forecaster.step(series[t], state)
        whole = forecaster(series.transpose(0, 1))
    torch.testing.assert_close(pred, whole, atol=1e-4 if dtype == torch.float32 else 1e-10,
                               rtol=1e-4 if dtype == torch.float32 else 1e-10)


# -- torch.jit.fork ---------------------------------------------------------------------


class ForkAll(torch.nn.Module):
    """Forks one task per input (forward of the LSTM, and forward + gradient
    with respect to the input) and waits for all of them."""

    def __init__(self, lstm: torch.nn.Module):
        super().__init__()
        self.lstm = lstm

    def fwd_bwd(self, x: Tensor) -> List[Tensor]:
        x = x.detach().requires_grad_()
        out, (h, c) = self.lstm(x)
        g = torch.autograd.grad([(out * out).sum() + c.sum()], [x])[0]
        assert g is not None
        return [out.detach(), h.detach(), c.detach(), g]

    def forward(self, xs: List[Tensor]) -> List[List[Tensor]]:
        forwards: List[torch.jit.Future[Tuple[Tensor, Tuple[Tensor, Tensor]]]] = []
        backwards: List[torch.jit.Future[List[Tensor]]] = []
        for x in xs:
            forwards.append(torch.jit.fork(self.lstm, x))
            backwards.append(torch.jit.fork(self.fwd_bwd, x))
        results: List[List[Tensor]] = []
        for f in forwards:
            out, (h, c) = torch.jit.wait(f)
            results.append([out, h, c])
        for b in backwards:
            results.append(torch.jit.wait(b))
        return results


def test_jit_fork(dtype):
    m = lstm_ext.LSTM(INPUT, HIDDEN, num_layers=2, dtype=dtype)
    forked = torch.jit.script(ForkAll(m))
    n = 2 * N_THREADS
    xs = [torch.randn(*shape_of(k), INPUT, dtype=dtype, generator=gen(k)) for k in range(n)]
    for _ in range(2):  # let the profiling executor settle
        forked(xs[:2])
    serial = [[t.detach() for t in flatten(forked.lstm(x))] for x in xs]
    serial += [forked.fwd_bwd(x) for x in xs]
    for _ in range(3):
        got = [[t.detach() for t in r] for r in forked(xs)]
        assert len(got) == 2 * n
        assert_bitwise(serial, got)
