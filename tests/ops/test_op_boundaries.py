"""The ops at the edges of their domain: empty reductions (batch 0, input
size 0, K = 0 products), sizes whose byte counts overflow, and meta tensors
mixed with CPU ones. Each case once returned stale memory or crashed."""
import pytest
import torch

import lstm_ext
from lstm_ext import reference

op = torch.ops.lstm_ext


def _layer_args(steps, batch, input_size, hidden, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return [r(steps, batch, input_size), r(batch, hidden), r(batch, hidden),
            r(4 * hidden, input_size), r(4 * hidden, hidden), r(4 * hidden), r(4 * hidden)]


def _stale_nan_blocks(dtype, *sizes):
    """Leaves NaN in freed blocks of the sizes the next calls will ask for (the
    suite also poisons fresh memory, see conftest.py)."""
    blocks = [torch.full((n,), float("nan"), dtype=dtype)
              for n in (1 << 18, 1 << 20, *sizes) for _ in range(20)]
    del blocks


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gemm_with_empty_inner_dimension_is_zero(dtype):
    _stale_nan_blocks(dtype, 1000)
    out = op.gemm(torch.empty(250, 0, dtype=dtype), torch.empty(0, 4, dtype=dtype))
    assert torch.equal(out, torch.zeros(250, 4, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batch_zero_gradients_are_zero_like_torch_nn(dtype):
    for ours, ref, x, state in (
        (lstm_ext.LSTM(3, 4), torch.nn.LSTM(3, 4), torch.randn(5, 0, 3), (1, 0, 4)),
        (lstm_ext.LSTMCell(3, 4), torch.nn.LSTMCell(3, 4), torch.randn(0, 3), (0, 4)),
    ):
        ref, ours = ref.to(dtype), ours.to(dtype)
        ours.load_state_dict(ref.state_dict())
        x = x.to(dtype)
        results = []
        for m in (ours, ref):
            _stale_nan_blocks(dtype, 12, 48, 16)
            out = m(x, (torch.zeros(state, dtype=dtype), torch.zeros(state, dtype=dtype)))
            loss = sum(o.sum() for o in torch.utils._pytree.tree_leaves(out))
            results.append(torch.autograd.grad(loss, list(m.parameters())))
        for a, b in zip(*results):
            assert torch.equal(a, b) and torch.equal(a, torch.zeros_like(a))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_input_size_zero_gives_bias_only_gates(dtype):
    # gates: 8 x 128 x 256 elements, 1 MiB and more: from the block cache
    x, h, c, w_ih, w_hh, b_ih, b_hh = _layer_args(8, 128, 0, 64, dtype)
    w_hh = w_hh * 0.1  # not chaotic: float32 round-off must not grow over the steps
    _stale_nan_blocks(dtype)
    out = op.lstm_layer_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, None)
    expected = reference.lstm_layer(x, h, c, w_ih, w_hh, b_ih, b_hh)
    assert not out[0].isnan().any()
    torch.testing.assert_close(out[0], expected[0], atol=1e-5, rtol=1e-4)


def test_byte_count_overflow_is_an_error_not_a_crash():
    """2^17 x (2^43 + 1) x 4 gates x 4 bytes wraps size_t to 2 MiB."""
    x = torch.zeros(1, 1, 0).expand(2 ** 17, 2 ** 43 + 1, 0)
    h = torch.zeros(1, 1).expand(2 ** 43 + 1, 1)
    with pytest.raises(RuntimeError, match="gates buffer of shape .* more than 2\\^63 bytes"):
        op.lstm_layer_forward(x, h, h, torch.zeros(4, 0), torch.zeros(4, 1), None, None, None)
    lstm = lstm_ext.LSTM(0, 1)
    hx = torch.zeros(1, 1, 1).expand(1, 2 ** 43 + 1, 1)
    with pytest.raises(RuntimeError, match="more than 2\\^63 bytes"):
        lstm(torch.zeros(1, 1, 0).expand(2 ** 17, 2 ** 43 + 1, 0), (hx, hx))


def test_cell_byte_count_overflow_is_an_error():
    h = torch.zeros(1, 1).expand(2 ** 61, 1)
    with pytest.raises(RuntimeError, match="gates buffer of shape .* more than 2\\^63 bytes"):
        op.lstm_cell_forward(torch.zeros(1, 0).expand(2 ** 61, 0), h, h, torch.zeros(4, 0),
                             torch.zeros(4, 1), None, None)


def _layer_backward_args():
    x, h, c, w_ih, w_hh, b_ih, b_hh = _layer_args(3, 2, 2, 3)
    out, _, _, gates, cs = op.lstm_layer_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, None)
    return dict(grad_output=torch.ones_like(out), grad_hy=None, grad_cy=None, input=x, hx=h,
                cx=c, w_ih=w_ih, w_hh=w_hh, output=out, gates=gates, cs=cs,
                lengths=torch.tensor([3, 2]), w_hr=None, output_mask=[True] * 7)


def _cell_backward_args():
    x, h, c, w_ih, w_hh, b_ih, b_hh = [t[0] if t.dim() == 3 else t for t in _layer_args(1, 2, 2, 3)]
    hy, cy, gates = op.lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh)
    return dict(grad_hy=torch.ones_like(hy), grad_cy=None, input=x, hx=h, cx=c, w_ih=w_ih,
                w_hh=w_hh, gates=gates, cy=cy, output_mask=[True] * 6)


def _on_meta(kwargs, name):
    return {**kwargs, name: kwargs[name].to("meta")}


@pytest.mark.parametrize("call", [
    lambda: op.lstm_layer_forward(*_layer_args(3, 2, 2, 3), torch.tensor([3, 2], device="meta")),
    lambda: op.lstm_layer_backward(**_on_meta(_layer_backward_args(), "lengths")),
    lambda: op.lstm_layer_backward(**_on_meta(_layer_backward_args(), "gates")),
    lambda: op.lstm_layer_backward(**_on_meta(_layer_backward_args(), "cs")),
    lambda: op.lstm_cell_backward(**_on_meta(_cell_backward_args(), "gates")),
    lambda: op.lstm_cell_backward(**_on_meta(_cell_backward_args(), "cy")),
    lambda: op.gemm(torch.ones(2, 3), torch.ones(3, 2, device="meta")),
], ids=["layer_fwd_lengths", "layer_bwd_lengths", "layer_bwd_gates", "layer_bwd_cs",
        "cell_bwd_gates", "cell_bwd_cy", "gemm"])
def test_meta_mixed_with_cpu_is_refused(call):
    with pytest.raises(RuntimeError, match="expected .* on (cpu|meta)"):
        call()


def test_all_meta_still_gives_shapes():
    """Meta throughout (shape inference) stays allowed; lengths may stay on the cpu."""
    args = [t.to("meta") for t in _layer_args(3, 2, 2, 3)]
    out = op.lstm_layer_forward(*args, torch.tensor([3, 2]))
    assert out[0].shape == (3, 2, 3) and out[0].device.type == "meta"


def _int8_args():
    x, h, c, w_ih, w_hh, b_ih, _ = _layer_args(3, 2, 2, 3, dtype=torch.float32)
    return [x, h, c, w_ih.to(torch.int8), torch.ones(12), w_hh.to(torch.int8), torch.ones(12),
            b_ih, None]


def _changed(args, index, value):
    return [value if i == index else a for i, a in enumerate(args)]


# Wrong arguments through the fake (meta) kernels, which torch.compile and
# torch.export trace: each must be refused in the CPU kernel's words (the
# fakes once returned shapes for a w_hh of (7, 4), and export recorded them).
@pytest.mark.parametrize("name, call, message", [
    ("layer", lambda a: op.lstm_layer_inference(*_changed(a, 4, a[4][:-1]), None),
     r"lstm_layer_inference: expected w_hh of shape \[12, 3\] \(4 \* hidden_size, hidden_size\), "
     r"but got \[11, 3\]"),
    ("layer", lambda a: op.lstm_layer_forward(*_changed(a, 3, a[3][:, :1]), None),
     r"lstm_layer_forward: expected w_ih of shape \[12, 2\] .* but got \[12, 1\]"),
    ("layer", lambda a: op.lstm_layer_forward(*_changed(a, 1, a[1][:1]), None),
     r"lstm_layer_forward: expected hx of shape \[2, 3\] \(batch, hidden_size\), but got \[1, 3\]"),
    ("layer", lambda a: op.lstm_layer_forward(*_changed(a, 6, a[6][:5]), None),
     r"lstm_layer_forward: expected b_hh of shape \[12\]"),
    ("layer", lambda a: op.lstm_layer_forward(*_changed(a, 2, a[2].float()), None),
     r"lstm_layer_forward: expected cx to have dtype"),
    ("layer", lambda a: op.lstm_layer_forward(*_changed(a, 0, a[0][0]), None),
     r"lstm_layer_forward: expected input to be 3-D"),
    ("cell", lambda a: op.lstm_cell_forward(a[0][0], a[1], a[2], a[3], a[4][:, :2], a[5], a[6]),
     r"lstm_cell_forward: expected w_hh of shape \[8, 2\] .* but got \[12, 2\]"),
    ("int8", lambda a: op.lstm_layer_forward_int8(*_changed(a, 6, a[6][:3])),
     r"lstm_layer_forward_int8: expected w_hh_scale of shape \[12\]"),
    ("int8", lambda a: op.lstm_layer_forward_int8(*_changed(a, 5, a[5].float())),
     r"lstm_layer_forward_int8: expected w_hh to have dtype"),
], ids=["layer_w_hh", "layer_w_ih", "layer_hx", "layer_b_hh", "layer_cx_dtype", "layer_dim",
        "cell_w_hh", "int8_scale", "int8_w_dtype"])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_fake_kernels_refuse_what_the_cpu_kernels_refuse(name, call, message, device):
    args = _int8_args() if name == "int8" else _layer_args(3, 2, 2, 3)
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(RuntimeError, match=message):
        call(args)
