"""TorchScript: scripting, eager parity, save/load in a fresh process, gradients."""
import os
import subprocess
import sys

import pytest
import torch

import lstm_ext
from conftest import F32

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODULES = {
    "cell": (lambda: lstm_ext.LSTMCell(4, 6), lambda: (torch.randn(3, 4),)),
    "lstm": (lambda: lstm_ext.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True),
             lambda: (torch.randn(3, 5, 4),)),
    "model": (lambda: lstm_ext.LSTMModel(4, 6, 2, num_layers=2), lambda: (torch.randn(3, 5, 4),)),
}


def flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in flat(o)]


@pytest.mark.parametrize("name", list(MODULES))
def test_scripted_matches_eager_outputs_and_gradients(name):
    make, inputs = MODULES[name]
    torch.manual_seed(0)
    eager = make()
    scripted = torch.jit.script(make())
    scripted.load_state_dict(eager.state_dict())
    args = inputs()
    out_e, out_s = flat(eager(*args)), flat(scripted(*args))
    for a, b in zip(out_e, out_s):
        torch.testing.assert_close(a, b, **F32)
    sum(o.sum() for o in out_e).backward()
    sum(o.sum() for o in out_s).backward()
    grads_s = dict(scripted.named_parameters())
    for pname, p in eager.named_parameters():
        torch.testing.assert_close(p.grad, grads_s[pname].grad, **F32, msg=pname)


@pytest.mark.parametrize("name", list(MODULES))
def test_save_and_load_in_a_fresh_process(name, tmp_path):
    make, inputs = MODULES[name]
    torch.manual_seed(0)
    module = make().eval()
    args = inputs()
    path = tmp_path / f"{name}.pt"
    torch.jit.script(module).save(str(path))
    torch.save({"args": args, "expected": flat(module(*args))}, tmp_path / "io.pt")
    code = (
        "import sys, torch, lstm_ext\n"
        f"m = torch.jit.load({str(path)!r})\n"
        f"io = torch.load({str(tmp_path / 'io.pt')!r})\n"
        "out = m(*io['args'])\n"
        "out = [out] if isinstance(out, torch.Tensor) else [t for o in out for t in ([o] if isinstance(o, torch.Tensor) else o)]\n"
        "for a, b in zip(out, io['expected']): torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_streaming_step_equals_whole_sequence():
    torch.manual_seed(0)
    model = torch.jit.script(lstm_ext.LSTMModel(3, 5, 2, num_layers=2).eval())
    x = torch.randn(4, 7, 3)
    state = None
    for t in range(7):
        y, state = model.step(x[:, t], state)
        torch.testing.assert_close(y, model(x[:, :t + 1]), **F32)


def test_step_refuses_bidirectional():
    with pytest.raises(Exception, match="bidirectional model needs the whole sequence"):
        lstm_ext.LSTMModel(3, 5, 2, bidirectional=True).step(torch.randn(1, 3))


def test_scripted_bad_input_is_still_clear():
    scripted = torch.jit.script(lstm_ext.LSTMCell(4, 6))
    with pytest.raises(Exception, match=r"expected input of shape \[2, 4\]"):
        scripted(torch.randn(2, 5))
