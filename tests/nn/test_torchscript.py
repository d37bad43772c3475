"""TorchScript: scripting, eager parity, save/load in a fresh process, gradients."""
import subprocess
import sys

import pytest
import torch

import lstm_ext
from helpers import F32, ROOT, layer_args, lstm_ext_ops_called, make_cell_args

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


@pytest.mark.parametrize("name", ["lstm_cell", "lstm_layer"])
def test_functional_api_scripts(name):
    """The modules call lstm_ext.ops' functions, which scripted modules compile
    with them: each scripts on its own and equals its eager call."""
    fn = getattr(lstm_ext.ops, name)
    if name == "lstm_cell":
        args = make_cell_args(3, 4, 5)
    else:
        args = layer_args(4, 3, 2, 3) + [torch.tensor([4, 3, 1])]
    scripted = torch.jit.script(fn)
    assert "lstm_ext::" in str(scripted.graph)
    torch.testing.assert_close(scripted(*args), fn(*args), atol=0, rtol=0)


def test_scripted_modules_run_the_functional_api():
    """Scripted, as eager, the modules reach the ops through lstm_ext.ops."""
    cell = torch.jit.script(lstm_ext.LSTMCell(4, 6))
    assert "__torch__.lstm_ext.ops.lstm_cell(" in cell.code
    model = torch.jit.script(lstm_ext.LSTMModel(4, 6, 2))
    for lstm in (torch.jit.script(lstm_ext.LSTM(4, 6)), model.lstm):
        assert "__torch__.lstm_ext.ops.lstm_layer(" in lstm._run.code


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


def test_scripted_module_runs_the_inference_op_without_grad():
    """A scripted LSTM keeps lstm_ext.ops.lstm_layer's choice: the inference op
    (nothing saved for a backward) under no_grad, as a C++ program runs it, and
    the forward op when a gradient can be asked for; the same results."""
    scripted = torch.jit.script(lstm_ext.LSTM(3, 5, num_layers=2))
    x = torch.randn(4, 2, 3)
    out = {}

    def run(key):
        out[key] = scripted(x)[0]

    assert lstm_ext_ops_called(lambda: run("with_grad")) == ["lstm_layer_forward"] * 2
    with torch.no_grad():
        assert lstm_ext_ops_called(lambda: run("without")) == ["lstm_layer_inference"] * 2
    torch.testing.assert_close(out["without"], out["with_grad"].detach(), rtol=0, atol=0)
