"""Command line: ``python -m lstm_ext {train,forecast,export}`` (also ``lstm-ext``)."""
import argparse
import math
import os
import sys
from typing import List, Optional

import numpy as np
import torch

from . import data
from .settings import LIMITS


def _train(args) -> int:
    from .train import TrainConfig, run
    cfg = TrainConfig(csv=args.csv, column=args.column, time_column=args.time_column,
                      window=args.window, horizon=args.horizon, season=args.season,
                      hidden_size=args.hidden_size, num_layers=args.num_layers, lr=args.lr,
                      batch_size=args.batch_size, epochs=args.epochs, patience=args.patience,
                      seed=args.seed, out=args.out)
    run(cfg, resume=args.resume)
    return 0


def recursive_forecast(forecaster, history: np.ndarray, window: int, steps: int) -> np.ndarray:
    """The next `steps` values after `history`, feeding forecasts back in when
    `steps` exceeds the model's horizon. ValueError if a forecast is not finite."""
    values = list(history[-window:])
    out: List[float] = []
    with torch.no_grad():
        while len(out) < steps:
            x = torch.tensor(values[-window:], dtype=torch.float32).reshape(1, -1, 1)
            pred = forecaster(x)[0].double().tolist()
            bad = next((k for k, v in enumerate(pred) if not math.isfinite(v)), None)
            if bad is not None:
                raise ValueError(f"its forecast {len(out) + bad + 1} step(s) ahead is not "
                                 f"finite ({pred[bad]}): the model overflows float32 here")
            out.extend(pred)
            values.extend(pred)
    return np.array(out[:steps])


def _last_line(exc: BaseException) -> str:
    """TorchScript errors end with the error raised; others have one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _forecast(args) -> int:
    from .train import forecaster_from_checkpoint, load_checkpoint, load_exported
    if args.checkpoint:
        source = args.checkpoint
        ckpt = load_checkpoint(source)
        forecaster = forecaster_from_checkpoint(ckpt)
        meta = {"window": ckpt["config"]["window"], "column": None, "time_column": None}
        cfg = ckpt["config"]
        if cfg["csv"] is None:
            meta.update(column=data.DEFAULT_COLUMN, time_column=data.DEFAULT_TIME_COLUMN)
    else:
        source = args.model
        forecaster, meta = load_exported(source)
    window = meta["window"]
    if args.csv is None:
        series = data.load_series()
    else:
        series = data.load_series(args.csv, args.column or meta.get("column"),
                                  args.time_column if args.time_column is not None
                                  else (meta.get("time_column") if args.column is None else None))
    if len(series) < window:
        raise data.DataError(f"{series.source}: {len(series)} values, fewer than the model's "
                             f"window of {window}")
    try:
        values = recursive_forecast(forecaster, series.values, window, args.steps)
    except ValueError as exc:  # a forecast overflowed float32
        raise ValueError(f"{source}: {exc}") from None
    except (RuntimeError, torch.jit.Error) as exc:
        raise ValueError(f"{source}: the model failed ({_last_line(exc)})") from None
    times = None
    if series.times is not None and len(series.times) > 1:
        step = np.median(np.diff(series.times.values))
        times = [series.times[-1] + step * (k + 1) for k in range(args.steps)]
    lines = ["time," + series.column if times else "step," + series.column]
    for k, v in enumerate(values):
        label = str(times[k].date()) if times else str(k + 1)
        lines.append(f"{label},{v:.9g}")
    text = "\n".join(lines) + "\n"
    if args.output:
        try:
            with open(args.output, "w") as f:
                f.write(text)
        except OSError as exc:
            raise ValueError(f"--output {args.output}: cannot write the forecast there "
                             f"({exc.strerror})") from None
        print(f"wrote {args.steps} forecast steps to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _export(args) -> int:
    from .train import (META_FILE, TrainConfig, export, forecaster_from_checkpoint,
                        load_checkpoint, make_out_dir)
    ckpt = load_checkpoint(args.checkpoint)
    cfg = TrainConfig(**ckpt["config"])
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    make_out_dir(out)
    meta = {"format": "lstm_ext.forecaster/1", "column": cfg.column or data.DEFAULT_COLUMN,
            "time_column": cfg.time_column or (None if cfg.csv else data.DEFAULT_TIME_COLUMN),
            "window": cfg.window, "horizon": cfg.horizon, "season": cfg.season,
            **ckpt["scaler"], "input_size": 1, "best_epoch": ckpt["best_epoch"]}
    path = export(forecaster_from_checkpoint(ckpt), meta, out)
    print(f"wrote {path} (TorchScript) and {os.path.join(out, META_FILE)}")
    return 0


def _option(name: str):
    """An argparse ``type=`` function for setting ``name``: errors name the option."""
    limit = LIMITS[name]

    def parse(text: str):
        try:
            return limit.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line (the usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m lstm_ext",
                                     description="Train, evaluate, forecast and export LSTM "
                                                 "forecasters with lstm_ext's C++ kernels.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on a series (default: Mauna Loa weekly CO2), "
                                     "evaluate against baselines, plot, export")
    t.add_argument("--csv", help="a CSV file with your own series (default: the embedded CO2 data)")
    t.add_argument("--column", help="the numeric column to forecast")
    t.add_argument("--time-column", help="a date/time column (orders rows, fills gaps in time)")
    t.add_argument("--window", type=_option("window"), default=104,
                   help="past steps the model sees (default 104)")
    t.add_argument("--horizon", type=_option("horizon"), default=13,
                   help="future steps it predicts (default 13)")
    t.add_argument("--season", type=_option("season"), default=52,
                   help="seasonal period for the seasonal-naive baseline (default 52)")
    t.add_argument("--hidden-size", type=_option("hidden_size"), default=32)
    t.add_argument("--num-layers", type=_option("num_layers"), default=1)
    t.add_argument("--lr", type=_option("lr"), default=0.005)
    t.add_argument("--batch-size", type=_option("batch_size"), default=64)
    t.add_argument("--epochs", type=_option("epochs"), default=60)
    t.add_argument("--patience", type=_option("patience"), default=10,
                   help="stop after this many epochs without a better validation loss")
    t.add_argument("--seed", type=_option("seed"), default=0)
    t.add_argument("--out", default=os.path.join("runs", "co2"),
                   help="output folder (default runs/co2)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.set_defaults(func=_train)

    f = sub.add_parser("forecast", help="forecast the next steps after the end of a series")
    src = f.add_mutually_exclusive_group()
    src.add_argument("--model", default=os.path.join("runs", "co2", "model.pt"),
                     help="an exported model (default runs/co2/model.pt)")
    src.add_argument("--checkpoint", help="or a training checkpoint")
    f.add_argument("--csv", help="the series to continue (default: the embedded CO2 data)")
    f.add_argument("--column")
    f.add_argument("--time-column")
    f.add_argument("--steps", type=_option("steps"), default=52,
                   help="how many steps ahead (default 52)")
    f.add_argument("--output", "-o", help="write CSV here instead of standard output")
    f.set_defaults(func=_forecast)

    e = sub.add_parser("export", help="export a checkpoint as TorchScript + JSON")
    e.add_argument("--checkpoint", default=os.path.join("runs", "co2", "checkpoint.pt"))
    e.add_argument("--out", help="output folder (default: the checkpoint's)")
    e.set_defaults(func=_export)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (data.DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; continue with --resume",
              file=sys.stderr)
        return 130
