"""One LSTM layer over a whole sequence, float32 or bfloat16, single layer, one direction:
lstm_ext.LSTM vs torch.nn.LSTM (oneDNN) vs lstm_ext.LSTMCell stepped from
Python vs the pure-Python reference, training (forward + backward, input
requiring grad) and inference. Also times the GEMM floor: only the GEMMs this
design must run, in ATen on the same shapes, pointwise work taken as free.
Run: python benchmarks/bench_layer.py [--quick] [--no-slow] [--dtype {float32,bfloat16,int8}]
[--shapes 'B,I,H,T;...']. In bfloat16 the floor is the same GEMMs in bf16 (ATen:
oneDNN) and the own-GEMM floor is not measured. --dtype int8 times inference
only: lstm_ext.quantize(nn.LSTM) against torch's dynamic int8 nn.LSTM
(torch.ao.quantization.quantize_dynamic), our bf16 layer, nn.LSTM in bf16 and
nn.LSTM in float32, in one interleaved run per shape."""
import os
import sys
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lstm_ext  # noqa: E402
from common import (forward_flops, interleaved_ms, interleaved_rounds, parse_args,  # noqa: E402
                    print_table, ratio_span, round_medians, start)
from lstm_ext import reference  # noqa: E402

SHAPES = [(100, 4, 3, 5), (32, 32, 64, 50), (64, 256, 256, 100), (64, 512, 512, 50),
          (1, 256, 256, 150)]
# (B, I, H, proj_size, T): LSTMs with projections, where nn.LSTM leaves oneDNN
# for its per-op implementation.
PROJ_SHAPES = [(32, 32, 64, 16, 50), (64, 256, 256, 128, 100), (64, 512, 512, 256, 50),
               (1, 256, 256, 64, 150)]


def gemm_floor(B, I, H, T, train, dtype=torch.float32):
    """Inference: the input projection plus T recurrent GEMMs. Training adds T
    dh GEMMs and the three large gradient GEMMs (dx, dW_ih, dW_hh). ATen's
    GEMM (MKL), as the issue defines the floor."""
    x = torch.randn(T * B, I, dtype=dtype)
    w_ih, w_hh = torch.randn(4 * H, I, dtype=dtype), torch.randn(4 * H, H, dtype=dtype)
    bias = torch.randn(4 * H, dtype=dtype)
    gates = torch.empty(T, B, 4 * H, dtype=dtype)
    h = torch.randn(B, H, dtype=dtype)
    dgates = torch.randn(T * B, 4 * H, dtype=dtype)
    dh = torch.empty(B, H, dtype=dtype)
    hs = torch.randn(T * B, H, dtype=dtype)

    def run():
        torch.addmm(bias, x, w_ih.t(), out=gates.view(T * B, 4 * H))
        for t in range(T):
            gates[t].addmm_(h, w_hh.t())
        if train:
            for t in range(T):
                torch.mm(dgates[t * B:(t + 1) * B], w_hh, out=dh)
            torch.mm(dgates, w_ih)
            torch.mm(dgates.t(), x)
            torch.mm(dgates.t(), hs)
    return run


def own_gemm_floor(B, I, H, T, train):
    """The same products on the GEMMs lstm_ext's kernels use (oneDNN for large
    shapes): how close the kernels are to their own limit."""
    gemm = torch.ops.lstm_ext.gemm
    x = torch.randn(T * B, I)
    w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H)
    h = torch.randn(B, H)
    dgates = torch.randn(T * B, 4 * H)
    hs = torch.randn(T * B, H)

    def run():
        gemm(x, w_ih.t())
        for t in range(T):
            gemm(h, w_hh.t())
        if train:
            for t in range(T):
                gemm(dgates[t * B:(t + 1) * B], w_hh)
            gemm(dgates, w_ih)
            gemm(dgates.t(), x)
            gemm(dgates.t(), hs)
    return run


def runner(module_fn, x, train):
    def run():
        if train:
            xi = x.detach().requires_grad_()
            out = module_fn(xi)
            out.sum().backward()
        else:
            with torch.no_grad():
                module_fn(x)
    return run


def main():
    args = parse_args(__doc__, slow_option=True, dtype_option=True)
    min_time = args.min_time
    dtype = args.torch_dtype
    ceiling = start("One layer over a whole sequence", args.dtype)
    if args.dtype == "int8":
        int8_table(args, ceiling)
        return
    rows = []
    for (B, I, H, T) in args.shape_list or SHAPES:
        torch.manual_seed(0)
        theirs = nn.LSTM(I, H).to(dtype)
        ours = lstm_ext.LSTM.from_torch(theirs)
        cell = lstm_ext.LSTMCell(I, H).to(dtype)
        cell.load_state_dict({k[:-3]: v for k, v in theirs.state_dict().items()})
        w = [ours.weight_ih_l0, ours.weight_hh_l0, ours.bias_ih_l0, ours.bias_hh_l0]
        x = torch.randn(T, B, I, dtype=dtype)
        zeros = torch.zeros(B, H, dtype=dtype)

        def stepped(xs):
            h = c = zeros
            outs = []
            for t in range(xs.shape[0]):
                h, c = cell(xs[t], (h, c))
                outs.append(h)
            return torch.stack(outs)

        impls = {
            "ours": lambda xs: ours(xs)[0],
            "nn.LSTM": lambda xs: theirs(xs)[0],
        }
        if not args.no_slow:
            impls["cell stepped"] = stepped
            impls["reference"] = lambda xs: reference.lstm_layer(xs, zeros, zeros, *w)[0]
        for mode, train in (("train", True), ("infer", False)):
            fns = {name: runner(fn, x, train) for name, fn in impls.items()}
            fns["floor"] = gemm_floor(B, I, H, T, train, dtype)
            if dtype == torch.float32:
                fns["own floor"] = own_gemm_floor(B, I, H, T, train)
            rounds = interleaved_rounds(fns, len(fns) * min_time)
            times = round_medians(rounds)
            floor, own = times["floor"], times.get("own floor", float("nan"))
            t = times["ours"]
            flops = forward_flops(B, I, H, T) * (3 if train else 1)
            gflops = flops / (t * 1e-3) / 1e9
            row = [f"({B}, {I}, {H}, {T})", mode, f"{t:.3f}", f"{times['nn.LSTM']:.3f}",
                   ratio_span(rounds, "nn.LSTM", "ours"), f"{floor:.3f}",
                   f"{t / floor:.2f}",
                   f"{times['nn.LSTM'] / floor:.2f}", f"{t / own:.2f}", f"{gflops:.1f}",
                   f"{100 * gflops / ceiling:.0f}%"]
            if not args.no_slow:
                row += [f"{times['cell stepped'] / t:.2f}x", f"{times['reference'] / t:.2f}x"]
            rows.append(row)
    columns = ["(B, I, H, T)", "mode", "ours ms", "nn.LSTM ms",
               "nn.LSTM/ours (rounds' range)", "floor ms",
               "ours/floor", "nn.LSTM/floor", "ours/own-GEMM floor", "ours GFLOP/s",
               "of ceiling"]
    if not args.no_slow:
        columns += ["cell stepped/ours", "reference/ours"]
    print_table(columns, rows)
    projection_table(min_time)


INT8_SHAPES = [(32, 32, 64, 50), (64, 256, 256, 100), (64, 512, 512, 50)]


def int8_table(args, ceiling):
    """Inference, float32 input: ours int8 (lstm_ext.quantize) vs torch's
    dynamic int8 nn.LSTM, vs our bf16 layer, nn.LSTM bf16 and nn.LSTM float32.
    GFLOP/s counts the float model's multiply-adds (forward_flops) as the
    other tables do; max err is max |ours int8 - nn.LSTM float32| on x."""
    rows = []
    for (B, I, H, T) in args.shape_list or INT8_SHAPES:
        torch.manual_seed(0)
        theirs = nn.LSTM(I, H).eval()
        ours = lstm_ext.quantize(theirs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
            dynamic = torch.ao.quantization.quantize_dynamic(theirs, {nn.LSTM},
                                                             dtype=torch.qint8)
        bf16_ours = lstm_ext.LSTM.from_torch(theirs).to(torch.bfloat16)
        bf16_theirs = nn.LSTM(I, H).to(torch.bfloat16)
        bf16_theirs.load_state_dict(bf16_ours.state_dict())
        x = torch.randn(T, B, I)
        xb = x.to(torch.bfloat16)
        fns = {
            "int8": runner(lambda xs: ours(xs)[0], x, False),
            "dynamic": runner(lambda xs: dynamic(xs)[0], x, False),
            "bf16": runner(lambda xs: bf16_ours(xs)[0], xb, False),
            "nn bf16": runner(lambda xs: bf16_theirs(xs)[0], xb, False),
            "fp32": runner(lambda xs: theirs(xs)[0], x, False),
        }
        rounds = interleaved_rounds(fns, len(fns) * args.min_time)
        times = round_medians(rounds)
        with torch.no_grad():
            err = (ours(x)[0] - theirs(x)[0]).abs().max().item()
        t = times["int8"]
        gflops = forward_flops(B, I, H, T) / (t * 1e-3) / 1e9
        rows.append([f"({B}, {I}, {H}, {T})", f"{t:.3f}", f"{times['dynamic']:.3f}",
                     ratio_span(rounds, "dynamic", "int8"), f"{times['bf16']:.3f}",
                     f"{times['bf16'] / t:.2f}x", f"{times['nn bf16']:.3f}",
                     f"{times['fp32']:.3f}", f"{gflops:.1f}", f"{err:.4f}"])
    print("Inference (no_grad), float32 input; medians of interleaved rounds, ms")
    print_table(["(B, I, H, T)", "ours int8 ms", "torch dyn-int8 ms", "dyn-int8/ours (range)",
                 "ours bf16 ms", "ours bf16/int8", "nn.LSTM bf16 ms", "nn.LSTM fp32 ms",
                 "ours int8 GFLOP/s", "max err vs fp32"], rows)
    print(f"thread fallbacks: {torch.ops.lstm_ext.thread_fallbacks()}, strikes (waits for a "
          f"thread off the CPU): {torch.ops.lstm_ext.thread_strikes()}")


def projection_table(min_time):
    """proj_size rows: ours vs nn.LSTM, float32, training and inference."""
    print("\nWith projections (proj_size), float32")
    ceiling_rows = []
    for (B, I, H, P, T) in PROJ_SHAPES:
        torch.manual_seed(0)
        theirs = nn.LSTM(I, H, proj_size=P)
        ours = lstm_ext.LSTM.from_torch(theirs)
        x = torch.randn(T, B, I)
        # per step: the gates' products (4H x (I + P)) and the projection (P x H)
        flops = 2 * B * T * (4 * H * (I + P) + P * H)
        for mode, train in (("train", True), ("infer", False)):
            fns = {"ours": runner(lambda xs: ours(xs)[0], x, train),
                   "nn.LSTM": runner(lambda xs: theirs(xs)[0], x, train)}
            times = interleaved_ms(fns, len(fns) * min_time)
            t = times["ours"]
            gflops = flops * (3 if train else 1) / (t * 1e-3) / 1e9
            ceiling_rows.append([f"({B}, {I}, {H}, {P}, {T})", mode, f"{t:.3f}",
                                 f"{times['nn.LSTM']:.3f}", f"{times['nn.LSTM'] / t:.2f}x",
                                 f"{gflops:.1f}"])
    print_table(["(B, I, H, P, T)", "mode", "ours ms", "nn.LSTM ms", "nn.LSTM/ours",
                 "ours GFLOP/s"], ceiling_rows)


if __name__ == "__main__":
    main()
