"""A/B: this build of the op library against another build (an older commit built
in a git worktree), with torch.nn.LSTM timed in the same processes, so that a
slower path cannot land silently. The builds run in alternating processes
(one library per process: both register the same ops), each timing ours and
nn.LSTM interleaved call by call; the table shows the median over rounds of
each run's median.

    git worktree add /tmp/base <commit> && (cd /tmp/base && python setup.py build_ext --inplace)
    python benchmarks/bench_ab.py --base /tmp/base --dtype bfloat16 --mode infer

Run: python benchmarks/bench_ab.py --base DIR [--dtype float32|bfloat16]
[--mode train|infer] [--rounds 3] [--shapes '32,32,64,50;...'] [--packed]
(--packed: a PackedSequence of lengths T down to T/2, both modules alike)
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = "100,4,3,5;32,32,64,50;64,256,256,100;64,512,512,50;1,256,256,150;64,1,32,336"


def child(dtype_name, mode, shapes, seconds, packed):
    """Times ours and nn.LSTM interleaved; prints 'B,I,H,T ours_ms nn_ms' per shape."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    import lstm_ext

    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    for shape in shapes:
        B, I, H, T = shape
        ref = torch.nn.LSTM(I, H).to(dtype)
        ours = lstm_ext.LSTM(I, H).to(dtype)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, I).to(dtype)
        lengths = torch.linspace(T, max(1, T // 2), B).round().long()

        def inputs(xi):
            return pack_padded_sequence(xi, lengths) if packed else xi

        def run(module):
            if mode == "infer":
                with torch.no_grad():
                    module(inputs(x))
            else:
                out = module(inputs(x.clone().requires_grad_()))[0]
                (out.data if packed else out).float().sum().backward()

        for _ in range(3):
            run(ours)
            run(ref)
        times = ([], [])
        start = time.time()
        while len(times[0]) < 9 or (time.time() - start < seconds and len(times[0]) < 200):
            for module, out in zip((ours, ref), times):
                t0 = time.perf_counter()
                run(module)
                out.append(time.perf_counter() - t0)
        ours_ms, nn_ms = (statistics.median(t) * 1e3 for t in times)
        print(",".join(map(str, shape)), ours_ms, nn_ms, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="source tree of the other build (its lstm_ext/_C.abi3.so)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per shape and run")
    parser.add_argument("--shapes", default=SHAPES)
    parser.add_argument("--packed", action="store_true",
                        help="variable lengths: a PackedSequence of lengths T down to T/2")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    if args.child:
        child(args.dtype, args.mode, shapes, args.seconds, args.packed)
        return
    if args.base is None:
        parser.error("--base: the source tree of the build to compare with is required")
    base_lib = os.path.join(os.path.abspath(args.base), "lstm_ext", "_C.abi3.so")
    if not os.path.isfile(base_lib):
        parser.error(f"--base: {base_lib} does not exist (build it there first)")
    builds = {"base": (os.path.abspath(args.base), base_lib),
              "this": (ROOT, os.path.join(ROOT, "lstm_ext", "_C.abi3.so"))}
    results = {b: {s: ([], []) for s in shapes} for b in builds}
    for _ in range(args.rounds):
        for name, (tree, lib) in builds.items():
            env = dict(os.environ, PYTHONPATH=tree, LSTM_EXT_LIBRARY=lib)
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", "--dtype", args.dtype,
                 "--mode", args.mode, "--seconds", str(args.seconds), "--shapes", args.shapes]
                + (["--packed"] if args.packed else []),
                env=env, capture_output=True, text=True, check=True, cwd="/").stdout
            for line, shape in zip(out.strip().splitlines(), shapes):
                _, ours_ms, nn_ms = line.split()
                results[name][shape][0].append(float(ours_ms))
                results[name][shape][1].append(float(nn_ms))
    import torch

    print(f"## A/B {args.dtype} {args.mode}{' packed' if args.packed else ''}: this build vs "
          f"{args.base}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, "
          "medians of per-run medians (ms)")
    # Each run times nn.LSTM beside ours, in the same process: ours / nn.LSTM
    # there cancels the machine's speed during that run, and this VM's slow
    # phases last minutes (two runs of one A/B, minutes apart, gave 0.70 and
    # 1.35 of the base's time for a change worth a few percent). The last
    # column is this build's ratio over the base's, per round, its median and
    # range.
    print("| (B, I, H, T) | base ours | this ours | this/base time | nn.LSTM | nn.LSTM/this "
          "| this/base, each against nn.LSTM in its run (rounds' range) |")
    print("|---|---|---|---|---|---|---|")
    for s in shapes:
        base = statistics.median(results["base"][s][0])
        this = statistics.median(results["this"][s][0])
        ref = statistics.median(results["base"][s][1] + results["this"][s][1])
        per_round = [(t / tn) / (b / bn) for t, tn, b, bn in
                     zip(*results["this"][s], *results["base"][s])]
        print(f"| {s} | {base:.3f} | {this:.3f} | {this / base:.2f} | {ref:.3f} | "
              f"{ref / this:.2f}x | {statistics.median(per_round):.2f} "
              f"({min(per_round):.2f}-{max(per_round):.2f}) |")


if __name__ == "__main__":
    main()
