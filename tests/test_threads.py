"""Concurrency and process safety of the ops.

Threads: Python threads sharing one module, and torch.jit.fork tasks, must get
results bitwise equal to the same calls made one after another. The shared
state a race would corrupt is the buffer cache (csrc/cpu/buffer_cache.cpp:
blocks of 1 MiB and more are recycled between calls, so the large shapes here
go through it) and the per-thread scratch of the fused step kernel
(thread_local in csrc/cpu/lstm_pointwise_impl.h). Every buffer starts as NaN
under the suite's LSTM_EXT_POISON=1, so a kernel reading a block another call
is still filling shows as a NaN or a changed value. The kernels give the same
bits for any thread count (checked below), so bitwise is the right test.

Processes: GNU OpenMP's thread pool does not survive fork(); a child entering
a parallel region after its parent used one hangs (ours and torch.nn.LSTM
alike). The library's pthread_atfork handler (csrc/cpu/fork_safety.cpp) gives
forked children one OpenMP thread, so they run instead of hanging. The
"spawn" start method (torch.multiprocessing) and DataLoader workers, forked
and spawned, must work. Each multi-process check runs in a subprocess of its
own with a timeout, so that a hang fails the test instead of hanging pytest.
"""
import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple

import pytest
import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from lstm_ext.forecaster import Forecaster

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


def test_kernels_give_the_same_bits_for_any_thread_count(dtype):
    # What makes the bitwise comparisons below meaningful: forked children and
    # DataLoader workers run on one thread, the parent on several.
    m = lstm_ext.LSTM(INPUT, HIDDEN, num_layers=2, dtype=dtype)
    x = torch.randn(20, 32, INPUT, dtype=dtype, generator=gen(0)).requires_grad_()

    def run():
        out, (h, c) = m(x)
        return [out, h, c, *torch.autograd.grad(out.sum() + c.sum(), [x, *m.parameters()])]

    threads = torch.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results[n] = run()
    finally:
        torch.set_num_threads(threads)
    for n in (2, 3):
        for i, (a, b) in enumerate(zip(results[1], results[n])):
            assert torch.isfinite(a).all()
            assert torch.equal(a, b), f"result {i}: {n} threads differ from one"


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


# -- processes ----------------------------------------------------------------------------


def run_script(tmp_path, source: str, timeout: float = 150) -> str:
    """Runs ``source`` as a script in its own session, with the suite's
    environment (LSTM_EXT_POISON=1); on timeout kills the whole process group
    (the script and its children) and fails. Returns its stdout."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=tmp_path,
                            env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the script did not finish in {timeout} s (a hang?)\n"
                    f"stdout: {out[-2000:]}\nstderr: {err[-4000:]}")
    assert proc.returncode == 0, f"exit status {proc.returncode}\nstdout: {out[-2000:]}\n" \
                                 f"stderr: {err[-4000:]}"
    return out


def load(path):
    return torch.load(path, weights_only=True)


FORK_SCRIPT = """
    import os, signal, sys, time
    import torch, lstm_ext

    out_dir = sys.argv[1]
    torch.set_num_threads(2)  # parallel regions in the parent, before the fork
    torch.manual_seed(0)
    ours = lstm_ext.LSTM(32, 128, num_layers=2)
    theirs = torch.nn.LSTM(32, 128, num_layers=2)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(20, 32, 32)  # buffers > 1 MiB

    def run():
        xg = x.clone().requires_grad_()
        out, (h, c) = ours(xg)
        gx, = torch.autograd.grad((out * out).sum(), xg)
        with torch.no_grad():
            ref = theirs(x)[0]
        return [out.detach(), h.detach(), c.detach(), gx, ref]

    before = run()
    assert torch.get_num_threads() == 2
    torch.save(before, os.path.join(out_dir, "parent.pt"))

    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            threads = torch.get_num_threads()
            torch.save({"threads": threads, "results": run()},
                       os.path.join(out_dir, "child.pt"))
            status = 0
        finally:
            os._exit(status)

    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.exit("the forked child hung")
        time.sleep(0.05)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"the forked child failed: exit status {code}")
    # the parent still has its threads, and gets the same results
    assert torch.get_num_threads() == 2
    torch.save(run(), os.path.join(out_dir, "parent_after.pt"))
"""


def test_fork_child_runs_ops_single_threaded(tmp_path):
    run_script(tmp_path, FORK_SCRIPT)
    parent = load(tmp_path / "parent.pt")
    child = load(tmp_path / "child.pt")
    # documented: a forked child runs on one OpenMP thread (instead of hanging)
    assert child["threads"] == 1
    assert len(child["results"]) == len(parent) == 5
    for i, (a, b) in enumerate(zip(parent[:4], child["results"][:4])):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b), f"result {i}: the forked child differs from the parent"
    # torch.nn.LSTM runs in the child too; oneDNN/MKL may sum in another order
    # on one thread, so that comparison is to tolerance
    torch.testing.assert_close(child["results"][4], parent[4], atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(parent[0], parent[4], atol=2e-5, rtol=1e-4)
    for a, b in zip(parent, load(tmp_path / "parent_after.pt")):
        assert torch.equal(a, b)


SPAWN_SCRIPT = """
    import os, sys
    import torch, torch.multiprocessing as mp
    import lstm_ext

    def make_module(state):
        m = lstm_ext.LSTM(32, 128, num_layers=2)
        m.load_state_dict(state)
        return m

    def work(args):
        state, x = args
        m = make_module(state)
        xg = x.clone().requires_grad_()
        out, (h, c) = m(xg)
        gx, = torch.autograd.grad((out * out).sum(), xg)
        return [out.detach(), h.detach(), c.detach(), gx, torch.tensor(os.getpid())]

    def process_main(queue, received, state, x):
        queue.put(work((state, x))[:4])
        # The tensors travel as shared memory whose file descriptors this
        # process hands out: it must live until the parent has them.
        received.wait(timeout=120)

    if __name__ == "__main__":
        out_dir = sys.argv[1]
        torch.manual_seed(0)
        state = lstm_ext.LSTM(32, 128, num_layers=2).state_dict()
        xs = [torch.randn(20 - 3 * k, 32, 32) for k in range(4)]
        serial = [work((state, x))[:4] for x in xs]  # the parent uses the ops first
        ctx = mp.get_context("spawn")
        with ctx.Pool(2) as pool:
            pooled = pool.map(work, [(state, x) for x in xs])
        assert all(int(r[4]) != os.getpid() for r in pooled)
        queue, received = ctx.Queue(), ctx.Event()
        p = ctx.Process(target=process_main, args=(queue, received, state, xs[0]))
        p.start()
        single = [t.clone() for t in queue.get(timeout=120)]
        received.set()
        p.join(timeout=60)
        assert p.exitcode == 0, p.exitcode
        torch.save({"serial": serial, "pooled": [r[:4] for r in pooled], "process": single},
                   os.path.join(out_dir, "spawn.pt"))
"""


def test_torch_multiprocessing_spawn(tmp_path):
    run_script(tmp_path, SPAWN_SCRIPT)
    got = load(tmp_path / "spawn.pt")
    serial = got["serial"]
    assert len(got["pooled"]) == len(serial) == 4
    for k, (want, have) in enumerate(zip(serial, got["pooled"])):
        for i, (a, b) in enumerate(zip(want, have)):
            assert torch.isfinite(a).all()
            assert torch.equal(a, b), f"input {k}, result {i}: the spawned worker differs"
    for a, b in zip(serial[0], got["process"]):
        assert torch.equal(a, b)
    assert not torch.equal(serial[0][1], serial[1][1])


DATALOADER_SCRIPT = """
    import os, sys
    import torch
    from torch.utils.data import DataLoader, Dataset
    import lstm_ext

    class Items(Dataset):
        \"\"\"Item i: our LSTM's output on input i (forward, and the gradient).\"\"\"

        def __init__(self, module, n):
            self.module = module
            self.n = n

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(20 - i, 32, 32, generator=g).requires_grad_()
            out, (h, c) = self.module(x)
            gx, = torch.autograd.grad((out * out).sum(), x)
            return [i, out.detach(), h.detach(), c.detach(), gx]

    if __name__ == "__main__":
        out_dir = sys.argv[1]
        torch.manual_seed(0)
        items = Items(lstm_ext.LSTM(32, 128, num_layers=2), 8)
        serial = [items[i] for i in range(len(items))]  # the parent uses the ops first
        got = {}
        for context in ("fork", "spawn"):  # fork: the default on Linux
            loader = DataLoader(items, batch_size=None, num_workers=2,
                                multiprocessing_context=context, timeout=120)
            got[str(context)] = list(loader)
        torch.save({"serial": serial, "got": got}, os.path.join(out_dir, "loader.pt"))
"""


def test_dataloader_workers_fork_and_spawn(tmp_path):
    run_script(tmp_path, DATALOADER_SCRIPT)
    result = load(tmp_path / "loader.pt")
    serial = result["serial"]
    assert set(result["got"]) == {"fork", "spawn"}
    for context, items in result["got"].items():
        assert len(items) == len(serial) == 8
        for want, have in zip(serial, items):
            assert have[0] == want[0]
            for i, (a, b) in enumerate(zip(want[1:], have[1:])):
                assert torch.isfinite(a).all()
                assert torch.equal(a, b), \
                    f"{context} workers, item {want[0]}, result {i}: differs from the parent"
