"""Threads: one training step (forward + backward with a given output
gradient) and one inference pass of one layer, float32 or bfloat16 (both
sides), lstm_ext.LSTM vs torch.nn.LSTM, at 1, 2 and the machine's thread count
(or the counts given), on an idle machine and with --busy N busy processes
running (a shared CPU: README, "Threads"). Each configuration runs in its own
process (thread counts are set once per process); medians of interleaved rounds.
Run: python benchmarks/bench_threads.py [--quick] [--busy N]
[--dtype {float32,bfloat16}] [--threads 1,4,16] [--shapes 'B,I,H,T;...']"""
import argparse
import json
import multiprocessing
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPES = [(64, 1, 32, 336), (32, 32, 64, 50), (64, 512, 512, 50)]  # (B, I, H, T)

CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, HERE)
import lstm_ext
from common import gemm_ceiling_gflops, interleaved_ms
dtype = getattr(torch, sys.argv[1])
threads, B, I, H, T, min_time = [float(v) if "." in v else int(v) for v in sys.argv[2:]]
torch.set_num_threads(threads)
torch.manual_seed(0)
theirs = torch.nn.LSTM(I, H).to(dtype)
ours = lstm_ext.LSTM.from_torch(theirs)
x, g = torch.randn(T, B, I, dtype=dtype), torch.randn(T, B, H, dtype=dtype)
def train(m):
    def run():
        xi = x.detach().requires_grad_()
        for p in m.parameters():
            p.grad = None
        m(xi)[0].backward(g)
    return run
def infer(m):
    def run():
        with torch.no_grad():
            m(x)
    return run
fns = {"ours train": train(ours), "nn train": train(theirs),
       "ours infer": infer(ours), "nn infer": infer(theirs)}
times = interleaved_ms(fns, len(fns) * min_time)
# This thread count's GEMM ceiling (1024^3, README "Correctness and
# performance"): how close each side's training comes to what the cores can
# do tells whether a ratio is still open or both sides sit at the machine's limit.
times["ceiling"] = gemm_ceiling_gflops(dtype=dtype)[0]
times["fallbacks"] = torch.ops.lstm_ext.thread_fallbacks()
# Waits for a thread off the CPU, the lone ones that did not fall back included.
times["strikes"] = torch.ops.lstm_ext.thread_strikes()
# How the float32 layer splits its time loop at this thread count (README,
# "Threads in a layer's time loop"); the bf16 layer always splits units.
groups = torch.ops.lstm_ext.layer_row_groups(B, [B] * T, 4 * H * H * 4)
times["split"] = (f"rows x{len(groups) - 1}" if dtype == torch.float32 and len(groups) > 2
                  else "units")
# The threads a float32 call runs on, where fewer than configured (layer_threads).
used = torch.ops.lstm_ext.layer_threads(B, I, H, [B] * T, 4 * H * H * 4)
if dtype == torch.float32 and used < threads:
    times["split"] += f" on {used}"
print(json.dumps(times))
"""


def busy():
    while True:
        pass


def measure(dtype, threads, shape, min_time):
    out = subprocess.run([sys.executable, "-c", f"HERE = {HERE!r}\n" + CHILD, dtype, str(threads),
                          *map(str, shape), str(min_time)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--busy", type=int, default=0, help="busy processes during the run")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of inputs and parameters (both sides)")
    parser.add_argument("--threads", default=None,
                        help="thread counts, e.g. '1,2,4,8,16' (default: 1, 2 and all cores)")
    parser.add_argument("--shapes", default=None,
                        help="only these shapes, e.g. '32,32,64,50;64,512,512,50'")
    args = parser.parse_args()
    counts = (sorted({1, 2, os.cpu_count() or 1}) if args.threads is None
              else [int(n) for n in args.threads.split(",")])
    shapes = SHAPES if args.shapes is None else [
        tuple(int(v) for v in shape.split(",")) for shape in args.shapes.split(";")]
    sys.path.insert(0, HERE)
    from common import forward_flops, header, print_table
    header(f"Threads, {'idle' if not args.busy else f'{args.busy} busy processes'}", args.dtype)
    hogs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(args.busy)]
    for h in hogs:
        h.start()
    try:
        rows = []
        for shape in shapes:
            base = None
            for n in counts:
                t = measure(args.dtype, n, shape, 0.2 if args.quick else 1.0)
                # Each configuration as it is measured, before the table: a
                # time limit that stops the run keeps what it measured (a
                # device run once lost both of its tables so).
                print(f"# {shape}, {n} threads: {json.dumps(t)}", flush=True)
                base = base or t
                # GFLOP/s of a training step (forward + backward: 3x the
                # forward's multiply-adds) as a share of this count's ceiling.
                gflops = {side: forward_flops(*shape) * 3 / (t[side] * 1e6)
                          for side in ("ours train", "nn train")}
                rows.append([str(shape), n,
                             f"{t['ours train']:.2f}", f"{t['nn train']:.2f}",
                             f"{t['nn train'] / t['ours train']:.2f}x",
                             f"{base['ours train'] / t['ours train']:.2f}x",
                             f"{t['ceiling']:.0f}", f"{gflops['ours train'] / t['ceiling']:.0%}",
                             f"{gflops['nn train'] / t['ceiling']:.0%}",
                             f"{t['ours infer']:.2f}", f"{t['nn infer']:.2f}",
                             f"{t['nn infer'] / t['ours infer']:.2f}x",
                             f"{base['ours infer'] / t['ours infer']:.2f}x", t["split"],
                             t["fallbacks"], t["strikes"]])
    finally:
        for h in hogs:
            h.terminate()
    print_table(["(B, I, H, T)", "threads", "ours train ms", "nn train ms", "nn/ours",
                 "ours vs 1 thread", "GEMM GFLOP/s", "ours train of it", "nn train of it",
                 "ours infer ms", "nn infer ms", "nn/ours",
                 "ours vs 1 thread", "split", "fallbacks", "strikes"], rows)


if __name__ == "__main__":
    main()
