"""Shared pieces of the benchmarks: timing, FLOP counts, the GEMM ceiling, tables."""
import argparse
import platform

import torch
from torch.utils import benchmark

import lstm_ext


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
          "int8": torch.int8}  # int8: inference with lstm_ext.quantize (bench_layer.py)


def parse_args(doc, slow_option=False, dtype_option=False):
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help="shorter timing runs")
    if dtype_option:
        parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                            help="dtype of inputs and parameters (both sides)")
        parser.add_argument("--shapes", default=None,
                            help="only these shapes, e.g. '32,32,64,50;64,512,512,50'")
    if slow_option:
        parser.add_argument("--no-slow", action="store_true",
                            help="skip the Python-stepped cell and the reference")
    args = parser.parse_args()
    args.min_time = 0.2 if args.quick else 1.0
    if dtype_option:
        args.torch_dtype = DTYPES[args.dtype]
        args.shape_list = None if args.shapes is None else [
            tuple(int(v) for v in shape.split(",")) for shape in args.shapes.split(";")]
    return args


def median_ms(fn, min_run_time=0.5):
    """Median wall time of fn() in ms, by torch.utils.benchmark (warm-up included)."""
    timer = benchmark.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def interleaved_rounds(fns, min_run_time=0.5, rounds=5):
    """Each of `fns`' (name -> callable) median time in ms in each of `rounds`
    interleaved rounds (A B C A B C ...): name -> one time per round. On these
    shared 2-core machines speed drifts by up to 2x over seconds, and not
    alike for every contestant (a Zen 4 VM's slow phases took nn.LSTM's
    training at (32,32,64,50) from 2.2 to 3.7 ms and ours from 1.8 to 2.7):
    interleaving keeps a slow phase from landing on one contestant, and the
    rounds show how much a ratio moves with the phase."""
    per_round = min_run_time / rounds
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_ms(fn, per_round))
    return times


def round_medians(rounds):
    """name -> the median of its rounds' times (the upper one of an even count)."""
    return {name: sorted(t)[len(t) // 2] for name, t in rounds.items()}


def interleaved_ms(fns, min_run_time=0.5, rounds=5):
    """The median over interleaved_rounds' rounds of each of `fns`, in ms."""
    return round_medians(interleaved_rounds(fns, min_run_time, rounds))


def ratio_span(rounds, slow, fast):
    """'1.28x (1.24-1.37)': the ratio of contestants `slow` and `fast`'s
    medians over interleaved_rounds' `rounds`, then its lowest and highest in
    a single round."""
    ratios = [a / b for a, b in zip(rounds[slow], rounds[fast])]
    med = round_medians(rounds)
    return f"{med[slow] / med[fast]:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def forward_flops(batch, input_size, hidden, steps):
    """8*B*H*(I+H) per step: the two gate GEMMs (multiply-adds counted twice)."""
    return 8 * batch * hidden * (input_size + hidden) * steps


def gemm_ceiling_gflops(n=1024, dtype=torch.float32):
    """This machine's GEMM throughput in `dtype`, all threads, n^3: ATen's
    torch.mm (float32: MKL; bfloat16: oneDNN where the CPU has bf16
    instructions) and, in float32, the best GEMM available (what lstm_ext's
    kernels use for large products: oneDNN where ATen has it). The ceiling is
    the larger."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    flops = 2 * n ** 3
    aten = flops / (median_ms(lambda: torch.mm(a, b)) * 1e-3) / 1e9
    if dtype != torch.float32:
        return aten, aten
    best = flops / (median_ms(lambda: torch.ops.lstm_ext.gemm(a, b)) * 1e-3) / 1e9
    return max(aten, best), aten


def start(title, dtype="float32"):
    """Prints the run's header and the GEMM ceiling in `dtype` (int8 tables
    show no share of a ceiling and get float32's); returns it."""
    header(title, dtype)
    if dtype == "bfloat16":
        best, _ = gemm_ceiling_gflops(dtype=torch.bfloat16)
        print(f"GEMM ceiling (1024^3 bfloat16, ATen torch.mm): {best:.0f} GFLOP/s\n")
        return best
    best, aten = gemm_ceiling_gflops()
    print(f"GEMM ceiling (1024^3 float32): {best:.0f} GFLOP/s "
          f"(ATen torch.mm alone: {aten:.0f} GFLOP/s)\n")
    return best


def header(title, dtype="float32"):
    print(f"## {title}")
    kernels = lstm_ext.pointwise_capability()
    if dtype in ("bfloat16", "int8"):
        kernels += f", bf16 kernels: {torch.ops.lstm_ext.bf16_kernel_build()}"
    if dtype == "int8":
        kernels += f", int8 kernels: {torch.ops.lstm_ext.int8_kernel_build()}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, lstm_ext pointwise kernels: "
          f"{kernels}, {dtype}")


def print_table(columns, rows):
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"
    print(line(columns))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print()
