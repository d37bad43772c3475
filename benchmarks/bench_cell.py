"""The cell stepped from Python over a sequence: lstm_ext.LSTMCell vs
torch.nn.LSTMCell vs the pure-Python reference, training (forward + backward)
and inference, float32 or bfloat16.
Run: python benchmarks/bench_cell.py [--quick] [--dtype {float32,bfloat16}] [--shapes 'B,I,H,T;...']"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lstm_ext  # noqa: E402
from common import forward_flops, interleaved_ms, parse_args, print_table, start  # noqa: E402
from lstm_ext import reference  # noqa: E402

SHAPES = [(100, 4, 3, 5), (32, 32, 64, 50), (64, 256, 256, 100), (64, 512, 512, 50)]


def stepper(cell_fn, x, hidden, train):
    batch = x.shape[1]

    def run():
        h = c = torch.zeros(batch, hidden, dtype=x.dtype)
        with torch.set_grad_enabled(train):
            for t in range(x.shape[0]):
                h, c = cell_fn(x[t], (h, c))
            if train:
                h.float().sum().backward()
    return run


def main():
    args = parse_args(__doc__, dtype_option=True)
    min_time = args.min_time
    dtype = args.torch_dtype
    ceiling = start("Cell stepped from Python over a sequence", args.dtype)
    rows = []
    for (B, I, H, T) in args.shape_list or SHAPES:
        torch.manual_seed(0)
        theirs = nn.LSTMCell(I, H).to(dtype)
        ours = lstm_ext.LSTMCell(I, H).to(dtype)
        ours.load_state_dict(theirs.state_dict())
        w = [ours.weight_ih, ours.weight_hh, ours.bias_ih, ours.bias_hh]
        ref = lambda x, s: reference.lstm_cell(x, s[0], s[1], *w)  # noqa: E731
        x = torch.randn(T, B, I, dtype=dtype)
        for mode, train in (("train", True), ("infer", False)):
            times = interleaved_ms({"ours": stepper(ours, x, H, train),
                                    "nn": stepper(theirs, x, H, train),
                                    "ref": stepper(ref, x, H, train)}, 3 * min_time)
            t_ours, t_nn, t_ref = times["ours"], times["nn"], times["ref"]
            flops = forward_flops(B, I, H, T) * (3 if train else 1)
            gflops = flops / (t_ours * 1e-3) / 1e9
            rows.append([f"({B}, {I}, {H}, {T})", mode, f"{t_ours:.3f}", f"{t_nn:.3f}",
                         f"{t_ref:.3f}", f"{t_nn / t_ours:.2f}x", f"{t_ref / t_ours:.2f}x",
                         f"{gflops:.1f}", f"{100 * gflops / ceiling:.0f}%"])
    print_table(["(B, I, H, T)", "mode", "ours ms", "nn.LSTMCell ms", "reference ms",
                 "vs nn.LSTMCell", "vs reference", "ours GFLOP/s", "of ceiling"], rows)


if __name__ == "__main__":
    main()
