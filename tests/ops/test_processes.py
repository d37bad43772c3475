"""Process safety of the ops: GNU OpenMP's thread pool does not survive
fork(); a child entering a parallel region after its parent used one hangs
(ours and torch.nn.LSTM alike). The library's pthread_atfork handler
(csrc/cpu/fork_safety.cpp) gives forked children one OpenMP thread, so they run
instead of hanging. The "spawn" start method (torch.multiprocessing) and
DataLoader workers, forked and spawned, must work. Each multi-process check
runs in a subprocess of its own with a timeout, so that a hang fails the test
instead of hanging pytest. Results must equal the parent's bitwise, which the
thread tests (test_threads.py) show meaningful: the kernels give the same bits
for any thread count.

Where torch sees an accelerator (a CUDA build on a GPU machine), its autograd
engine starts a thread per device at the first backward (engine.cpp,
start_device_threads), and from then on a forked child's backward raises
"Unable to handle autograd's threading in combination with fork-based
multiprocessing" for every op, torch.nn.LSTM's too. There the forked checks
compare forward results, and check that nn.LSTM's backward and ours refuse alike
(found on the lent GPU machine, where the DataLoader test failed so).
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch


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

    def run(backward=True):
        xg = x.clone().requires_grad_()
        out, (h, c) = ours(xg)
        gx = torch.autograd.grad((out * out).sum(), xg)[0] if backward else None
        with torch.no_grad():
            ref = theirs(x)[0]
        return [out.detach(), h.detach(), c.detach(), gx, ref]

    def backward_error(module):
        # the message of the error a backward through module raises, or None
        try:
            xg = x.clone().requires_grad_()
            torch.autograd.grad(module(xg)[0].sum(), xg)
        except RuntimeError as e:
            return str(e)
        return None

    # Asked in the parent: a forked child asking CUDA would initialize it there.
    backward_in_fork = torch.accelerator.device_count() == 0  # the module docstring says why
    before = run()
    assert torch.get_num_threads() == 2
    torch.save(before, os.path.join(out_dir, "parent.pt"))

    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            threads = torch.get_num_threads()
            backward = backward_in_fork
            refused = {} if backward else {"ours": backward_error(ours),
                                           "nn": backward_error(theirs)}
            torch.save({"threads": threads, "results": run(backward), "refused": refused},
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
    if child["refused"]:  # torch's rule for a forked child's backward (module docstring)
        assert child["results"][3] is None
        for who in ("ours", "nn"):
            assert "fork-based multiprocessing" in (child["refused"][who] or ""), child["refused"]
    for i, (a, b) in enumerate(zip(parent[:4], child["results"][:4])):
        if b is None and child["refused"]:
            continue
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
        \"\"\"Item i: our LSTM's output on input i (forward, and the gradient
        unless backward is False).\"\"\"

        def __init__(self, module, n, backward=True):
            self.module = module
            self.n = n
            self.backward = backward

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            x = torch.randn(20 - i, 32, 32, generator=g).requires_grad_()
            out, (h, c) = self.module(x)
            gx = torch.autograd.grad((out * out).sum(), x)[0] if self.backward else None
            return [i, out.detach(), h.detach(), c.detach(), gx]

    if __name__ == "__main__":
        out_dir = sys.argv[1]
        torch.manual_seed(0)
        items = Items(lstm_ext.LSTM(32, 128, num_layers=2), 8)
        serial = [items[i] for i in range(len(items))]  # the parent uses the ops first
        got = {}
        # forked workers cannot run a backward where torch sees an accelerator
        # (module docstring): there they check the forward alone
        fork_backward = torch.accelerator.device_count() == 0
        for context in ("fork", "spawn"):  # fork: the default on Linux
            items.backward = context != "fork" or fork_backward
            loader = DataLoader(items, batch_size=None, num_workers=2,
                                multiprocessing_context=context, timeout=120)
            got[str(context)] = list(loader)
        torch.save({"serial": serial, "got": got, "fork_backward": fork_backward},
                   os.path.join(out_dir, "loader.pt"))
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
                if b is None and context == "fork" and not result["fork_backward"]:
                    continue  # the gradient, which torch refuses there (module docstring)
                assert torch.isfinite(a).all()
                assert torch.equal(a, b), \
                    f"{context} workers, item {want[0]}, result {i}: differs from the parent"
