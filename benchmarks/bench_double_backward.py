"""Second-order gradients: one gradient-penalty step (out -> d(sum out^2)/dx
with create_graph=True -> d(|dx|^2)/dparams) through lstm_ext.LSTM and through
torch.nn.LSTM, next to each one's first-order step (forward + backward), float32.
lstm_ext's double backward recomputes the forward in ATen ops (README, "How
it is fast"), so it trails its own first-order path; this prints by how much.
Run: python benchmarks/bench_double_backward.py [--quick]"""
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lstm_ext  # noqa: E402
from common import header, interleaved_ms, parse_args, print_table  # noqa: E402

SHAPES = [(32, 32, 64, 50), (64, 256, 256, 100)]  # (B, I, H, T)


def first_order(module, x):
    def run():
        xi = x.detach().requires_grad_()
        module(xi)[0].sum().backward()
    return run


def penalty(module, x):
    params = list(module.parameters())

    def run():
        xi = x.detach().requires_grad_()
        out = module(xi)[0]
        (gx,) = torch.autograd.grad(out.pow(2).sum(), xi, create_graph=True)
        torch.autograd.grad(gx.pow(2).sum(), params)
    return run


def main():
    args = parse_args(__doc__)
    header("Double backward (gradient penalty) vs first order")
    rows = []
    for (B, I, H, T) in SHAPES:
        torch.manual_seed(0)
        theirs = nn.LSTM(I, H)
        ours = lstm_ext.LSTM.from_torch(theirs)
        x = torch.randn(T, B, I)
        fns = {"ours 1st": first_order(ours, x), "ours 2nd": penalty(ours, x),
               "nn 1st": first_order(theirs, x), "nn 2nd": penalty(theirs, x)}
        t = interleaved_ms(fns, len(fns) * args.min_time)
        rows.append([f"({B}, {I}, {H}, {T})", f"{t['ours 1st']:.2f}", f"{t['ours 2nd']:.2f}",
                     f"{t['ours 2nd'] / t['ours 1st']:.1f}x", f"{t['nn 1st']:.2f}",
                     f"{t['nn 2nd']:.2f}", f"{t['nn 2nd'] / t['ours 2nd']:.2f}x"])
    print_table(["(B, I, H, T)", "ours 1st-order ms", "ours penalty ms", "penalty/1st",
                 "nn.LSTM 1st-order ms", "nn.LSTM penalty ms", "nn.LSTM/ours penalty"], rows)


if __name__ == "__main__":
    main()
