"""The functional API over the C++ ops, and their fake (meta) kernels.

``lstm_cell`` and ``lstm_layer`` are what the modules (lstm_ext.nn) call; they
call ``torch.ops.lstm_ext.*`` and are TorchScript-compatible, so scripted
modules run the same code. Schemas, CPU kernels and autograd all live in C++
(csrc/; autograd is registered at the Autograd key in csrc/autograd/), so eager
Python, TorchScript and C++ programs share one forward, one backward and one
autograd formula. The fake kernels below check the arguments as the real
kernels do (devices, dtypes and shapes, in their words) and state the output
shapes, so the ops also trace under torch.compile / torch.export, refuse there
what the kernels would refuse, and pass ``torch.library.opcheck``. The backward
ops are not themselves differentiable; second-order gradients
(``create_graph=True``) come from the C++ autograd recomputing the forward in
differentiable ATen ops (csrc/autograd/differentiable_forward.h).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def _check_devices(op, lengths=None, **tensors):
    """Mixed devices (say cpu with meta) would otherwise reach these shape-only
    kernels (Meta outranks CPU in dispatch) and return uninitialised CPU memory:
    refuse them, as the CPU kernels do. ``lengths`` may also lie on the cpu
    (the real kernels read it there)."""
    device = next(iter(tensors.values())).device
    for name, t in tensors.items():
        if t is not None and t.device != device:
            first = next(iter(tensors))
            raise RuntimeError(
                f"{op}: expected {name} on {device} (the device of {first}), but got {t.device}"
            )
    if lengths is not None and lengths.device not in (device, torch.device("cpu")):
        raise RuntimeError(
            f"{op}: expected lengths on the cpu or on {device}, but got {lengths.device}"
        )


# The real kernels' argument checks (csrc/cpu/checks.h, check_lstm_args), in
# their order and words, so that torch.compile / torch.export refuse what the
# kernel would: without them a w_hh of shape (15, 4) was traced, its wrong
# shapes recorded, and the error came only when the program ran. torch._check
# rather than `if`, so a symbolic (dynamic) batch or length becomes a runtime
# assertion instead of a guard.
def _check_dtype(op, name, t, dtype):
    torch._check(t.dtype == dtype, lambda: f"{op}: expected {name} to have dtype {dtype} "
                                           f"(the dtype of input), but got {t.dtype}")


def _check_shape(op, name, t, expected, layout):
    def message():
        return f"{op}: expected {name} of shape {list(expected)} {layout}, but got {list(t.shape)}"
    torch._check(t.dim() == len(expected), message)
    for got, want in zip(t.shape, expected):
        torch._check(got == want, message)


def _check_dim(op, name, t, dim, layout):
    torch._check(t.dim() == dim, lambda: f"{op}: expected {name} to be {dim}-D {layout}, but "
                                         f"got shape {list(t.shape)}")


def _check_lstm_args(op, input, dim, layout, hx, cx, w_ih, w_hh, w_hr=None, b_ih=None,
                     b_hh=None, float_dtypes=True):
    """check_lstm_args and check_biases of checks.h; returns (hidden, proj)."""
    if float_dtypes:
        torch._check(input.dtype != torch.float16, lambda: f"{op}: float16 (Half) is not "
                     "supported; use bfloat16, float32 or float64 (input is float16)")
        torch._check(input.dtype in (torch.float32, torch.float64, torch.bfloat16),
                     lambda: f"{op}: expected input to be float32, float64 or bfloat16, but "
                             f"got {input.dtype}")
    _check_dim(op, "input", input, dim, layout)
    dtype = input.dtype
    batch, in_size = input.shape[dim - 2], input.shape[dim - 1]
    if w_hr is not None:
        _check_dim(op, "w_hr", w_hr, 2, "(proj_size, hidden_size)")
        proj, hidden = w_hr.shape
        _check_dtype(op, "w_hr", w_hr, dtype)
        torch._check(proj > 0, lambda: f"{op}: expected w_hr with proj_size > 0 rows, but got "
                                       f"shape {list(w_hr.shape)}")
        _check_dtype(op, "w_hh", w_hh, dtype)
        _check_shape(op, "w_hh", w_hh, [4 * hidden, proj], "(4 * hidden_size, proj_size)")
    else:
        _check_dim(op, "w_hh", w_hh, 2, "(4 * hidden_size, hidden_size)")
        hidden = proj = w_hh.shape[1]
        if float_dtypes:
            _check_dtype(op, "w_hh", w_hh, dtype)
        _check_shape(op, "w_hh", w_hh, [4 * hidden, hidden], "(4 * hidden_size, hidden_size)")
    for name, t, shape, lay in (
            ("w_ih", w_ih, [4 * hidden, in_size], "(4 * hidden_size, input_size)"),
            ("hx", hx, [batch, proj],
             "(batch, proj_size)" if w_hr is not None else "(batch, hidden_size)"),
            ("cx", cx, [batch, hidden], "(batch, hidden_size)"),
            ("b_ih", b_ih, [4 * hidden], "(4 * hidden_size)"),
            ("b_hh", b_hh, [4 * hidden], "(4 * hidden_size)")):
        if t is not None:
            if float_dtypes:
                _check_dtype(op, name, t, dtype)
            _check_shape(op, name, t, shape, lay)
    return hidden, proj


def _saved_dtype(input):
    """The dtype of the float32 buffers the bfloat16 kernels save for the
    backward (the cell's gates, the layer's cs); otherwise the input's."""
    return torch.float32 if input.dtype == torch.bfloat16 else input.dtype


def _masked(mask, index, make):
    return make() if mask[index] else None


@torch.library.register_fake("lstm_ext::lstm_cell_forward")
def _cell_forward_fake(input, hx, cx, w_ih, w_hh, b_ih, b_hh):
    _check_devices("lstm_cell_forward", input=input, hx=hx, cx=cx, w_ih=w_ih, w_hh=w_hh,
                   b_ih=b_ih, b_hh=b_hh)
    hidden, _ = _check_lstm_args("lstm_cell_forward", input, 2, "(batch, input_size)", hx, cx,
                                 w_ih, w_hh, b_ih=b_ih, b_hh=b_hh)
    batch = input.shape[0]
    return (
        input.new_empty((batch, hidden)),
        input.new_empty((batch, hidden)),
        input.new_empty((batch, 4 * hidden), dtype=_saved_dtype(input)),
    )


def _backward_fake(input, hx, cx, w_ih, w_hh, output_mask, w_hr=None, projection=False):
    makers = [
        lambda: torch.empty_like(input),
        lambda: torch.empty_like(hx),
        lambda: torch.empty_like(cx),
        lambda: torch.empty_like(w_ih),
        lambda: torch.empty_like(w_hh),
        lambda: w_hh.new_empty((w_hh.shape[0],)),
    ]
    if projection:  # the layer op's grad_w_hr: undefined without w_hr
        makers.append(lambda: torch.empty_like(w_hr) if w_hr is not None else None)
    return tuple(_masked(output_mask, i, make) for i, make in enumerate(makers))


@torch.library.register_fake("lstm_ext::lstm_cell_backward")
def _cell_backward_fake(grad_hy, grad_cy, input, hx, cx, w_ih, w_hh, gates, cy, output_mask):
    _check_devices("lstm_cell_backward", input=input, grad_hy=grad_hy, grad_cy=grad_cy, hx=hx,
                   cx=cx, w_ih=w_ih, w_hh=w_hh, gates=gates, cy=cy)
    return _backward_fake(input, hx, cx, w_ih, w_hh, output_mask)


def _layer_outputs(op, input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths, w_hr):
    """What lstm_layer_forward returns: output, hy, cy, gates, cs (the
    inference op: the first three)."""
    _check_devices(op, lengths, input=input, hx=hx, cx=cx, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
                   b_hh=b_hh, w_hr=w_hr)
    hidden, proj = _check_lstm_args(op, input, 3, "(seq_len, batch, input_size)", hx, cx, w_ih,
                                    w_hh, w_hr, b_ih, b_hh)
    steps, batch = input.shape[0], input.shape[1]
    return (
        input.new_empty((steps, batch, proj)),
        input.new_empty((batch, proj)),
        input.new_empty((batch, hidden)),
        input.new_empty((steps, batch, 4 * hidden)),
        input.new_empty((steps, batch, hidden), dtype=_saved_dtype(input)),
    )


@torch.library.register_fake("lstm_ext::lstm_layer_forward")
def _layer_forward_fake(input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths, w_hr=None):
    return _layer_outputs("lstm_layer_forward", input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths,
                          w_hr)


@torch.library.register_fake("lstm_ext::lstm_layer_inference")
def _layer_inference_fake(input, hx, cx, w_ih, w_hh, b_ih, b_hh, lengths, w_hr=None):
    return _layer_outputs("lstm_layer_inference", input, hx, cx, w_ih, w_hh, b_ih, b_hh,
                          lengths, w_hr)[:3]


@torch.library.register_fake("lstm_ext::lstm_layer_backward")
def _layer_backward_fake(grad_output, grad_hy, grad_cy, input, hx, cx, w_ih, w_hh,
                         output, gates, cs, lengths, w_hr, output_mask):
    _check_devices("lstm_layer_backward", lengths, input=input, grad_output=grad_output,
                   grad_hy=grad_hy, grad_cy=grad_cy, hx=hx, cx=cx, w_ih=w_ih, w_hh=w_hh,
                   output=output, gates=gates, cs=cs, w_hr=w_hr)
    return _backward_fake(input, hx, cx, w_ih, w_hh, output_mask, w_hr, projection=True)


@torch.library.register_fake("lstm_ext::lstm_layer_forward_int8")
def _layer_forward_int8_fake(input, hx, cx, w_ih, w_ih_scale, w_hh, w_hh_scale, bias, lengths):
    _check_devices("lstm_layer_forward_int8", lengths, input=input, hx=hx, cx=cx, w_ih=w_ih,
                   w_ih_scale=w_ih_scale, w_hh=w_hh, w_hh_scale=w_hh_scale, bias=bias)
    op = "lstm_layer_forward_int8"
    torch._check(input.dtype == torch.float32, lambda: f"{op}: expected input to have dtype "
                 f"torch.float32 (int8 layers take float32 activations), but got {input.dtype}")
    for name, t in (("w_ih", w_ih), ("w_hh", w_hh)):
        torch._check(t.dtype == torch.int8, lambda: f"{op}: expected {name} to have dtype "
                     f"torch.int8 (the quantized weights), but got {t.dtype}")
    hidden, _ = _check_lstm_args(op, input, 3, "(seq_len, batch, input_size)", hx, cx, w_ih,
                                 w_hh, float_dtypes=False)
    for name, t in (("w_ih_scale", w_ih_scale), ("w_hh_scale", w_hh_scale), ("bias", bias)):
        if t is not None:
            torch._check(t.dtype == torch.float32, lambda: f"{op}: expected {name} to have dtype "
                         f"torch.float32, but got {t.dtype}")
            _check_shape(op, name, t, [4 * hidden], "(4 * hidden_size)")
    steps, batch = input.shape[0], input.shape[1]
    return (
        input.new_empty((steps, batch, hidden)),
        input.new_empty((batch, hidden)),
        input.new_empty((batch, hidden)),
    )


@torch.library.register_fake("lstm_ext::gemm")
def _gemm_fake(a, b):
    _check_devices("gemm", a=a, b=b)
    return a.new_empty((a.shape[0], b.shape[1]))


def lstm_cell(input: Tensor, hx: Tensor, cx: Tensor, w_ih: Tensor, w_hh: Tensor,
              b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None
              ) -> Tuple[Tensor, Tensor]:
    """One LSTM step, ``(h, c)`` from ``input (B, I)`` and the state ``(B, H)`` each."""
    hy, cy, _ = torch.ops.lstm_ext.lstm_cell_forward(input, hx, cx, w_ih, w_hh, b_ih, b_hh)
    return hy, cy


def lstm_layer(input: Tensor, hx: Tensor, cx: Tensor, w_ih: Tensor, w_hh: Tensor,
               b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
               lengths: Optional[Tensor] = None, w_hr: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor, Tensor]:
    """One direction of one layer over ``input (T, B, I)``: ``(output, h_n, c_n)``.

    ``lengths`` (int64, CPU, non-increasing, each in [1, T]) marks each row's
    valid steps; later steps output zeros and leave the state alone. ``w_hr
    (P, H)`` projects h to P features (torch.nn.LSTM's ``proj_size``): then
    ``hx``, ``h_n`` and ``output`` have P features and ``w_hh`` is ``(4H, P)``.

    When no gradient can be asked for (grad mode off, or no argument requires
    grad) it runs ``lstm_layer_inference``, which keeps nothing for a backward:
    the same results, bit for bit, with less memory written.
    """
    if _needs_grad(input, hx, cx, w_ih, w_hh, b_ih, b_hh, w_hr):
        out, hy, cy, _, _ = torch.ops.lstm_ext.lstm_layer_forward(input, hx, cx, w_ih, w_hh,
                                                                  b_ih, b_hh, lengths, w_hr)
        return out, hy, cy
    return torch.ops.lstm_ext.lstm_layer_inference(input, hx, cx, w_ih, w_hh, b_ih, b_hh,
                                                   lengths, w_hr)


def _needs_grad(input: Tensor, hx: Tensor, cx: Tensor, w_ih: Tensor, w_hh: Tensor,
                b_ih: Optional[Tensor], b_hh: Optional[Tensor], w_hr: Optional[Tensor]) -> bool:
    """Whether autograd would record a layer call with these arguments."""
    if not torch.is_grad_enabled():
        return False
    if input.requires_grad or hx.requires_grad or cx.requires_grad or w_ih.requires_grad \
            or w_hh.requires_grad:
        return True
    if b_ih is not None and b_ih.requires_grad:
        return True
    if b_hh is not None and b_hh.requires_grad:
        return True
    return w_hr is not None and w_hr.requires_grad


def lstm_layer_int8(input: Tensor, hx: Tensor, cx: Tensor, w_ih: Tensor, w_ih_scale: Tensor,
                    w_hh: Tensor, w_hh_scale: Tensor, bias: Optional[Tensor] = None,
                    lengths: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """``lstm_layer`` for inference with int8 weights: ``(output, h_n, c_n)``.

    ``w_ih (4H, I)`` and ``w_hh (4H, H)`` are int8, symmetric per output
    channel, with float32 scales ``(4H,)`` (``W ~ w.float() * scale[:, None]``,
    see ``lstm_ext.quantization.quantize_weight``); ``bias`` is ``b_ih + b_hh``
    in float32. ``input``, ``hx``, ``cx`` and the results are float32; the
    activations are quantized to 8 bits per row at each step. No gradient.
    """
    return torch.ops.lstm_ext.lstm_layer_forward_int8(input, hx, cx, w_ih, w_ih_scale, w_hh,
                                                      w_hh_scale, bias, lengths)


def pointwise_capability() -> str:
    """The build of the vectorised pointwise kernels this CPU runs ("avx512",
    "avx2" or "default"); ATEN_CPU_CAPABILITY steers it as it steers ATen."""
    return torch.ops.lstm_ext.pointwise_capability()
