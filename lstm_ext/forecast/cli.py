"""Command line: ``python -m lstm_ext {train,forecast,export}`` (also ``lstm-ext``).

Only the arguments are here: their defaults come from ``settings``, their
checks from ``settings.LIMITS``; each command calls the application's modules.
"""
import argparse
import os
import sys
from dataclasses import fields
from typing import List, Optional

from . import artifacts, series, training
from .forecaster import forecast
from .settings import DEFAULT_OUT, FORECAST_STEPS, LIMITS, TrainConfig

DEFAULTS = TrainConfig()


def _train(args) -> int:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    training.run(cfg, resume=args.resume)
    return 0


def _forecast(args) -> int:
    forecaster, meta, source = artifacts.load_forecaster(args.model, args.checkpoint)
    observed = series.load_to_continue(meta, args.csv, args.column, args.time_column)
    values = forecast(forecaster, observed.values, meta["window"], args.steps, source)
    text = series.forecast_csv(observed, values)
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
    ckpt = artifacts.load_checkpoint(args.checkpoint)
    cfg = TrainConfig(**ckpt["config"])
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    artifacts.make_out_dir(out)
    meta = artifacts.model_meta(cfg, ckpt["scaler"], ckpt["best_epoch"])
    path = artifacts.export(artifacts.forecaster_from_checkpoint(ckpt), meta, out)
    print(f"wrote {path} (TorchScript) and {os.path.join(out, artifacts.META_FILE)}")
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
    d = DEFAULTS

    t = sub.add_parser("train", help="train on a series (default: Mauna Loa weekly CO2), "
                                     "evaluate against baselines, plot, export")
    t.add_argument("--csv", help="a CSV file with your own series (default: the embedded CO2 data)")
    t.add_argument("--column", help="the numeric column to forecast")
    t.add_argument("--time-column", help="a date/time column (orders rows, fills gaps in time)")
    t.add_argument("--window", type=_option("window"), default=d.window,
                   help=f"past steps the model sees (default {d.window})")
    t.add_argument("--horizon", type=_option("horizon"), default=d.horizon,
                   help=f"future steps it predicts (default {d.horizon})")
    t.add_argument("--season", type=_option("season"), default=d.season,
                   help=f"seasonal period for the seasonal-naive baseline (default {d.season})")
    t.add_argument("--hidden-size", type=_option("hidden_size"), default=d.hidden_size)
    t.add_argument("--num-layers", type=_option("num_layers"), default=d.num_layers)
    t.add_argument("--lr", type=_option("lr"), default=d.lr)
    t.add_argument("--batch-size", type=_option("batch_size"), default=d.batch_size)
    t.add_argument("--epochs", type=_option("epochs"), default=d.epochs)
    t.add_argument("--patience", type=_option("patience"), default=d.patience,
                   help="stop after this many epochs without a better validation loss")
    t.add_argument("--seed", type=_option("seed"), default=d.seed)
    t.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.set_defaults(func=_train)

    f = sub.add_parser("forecast", help="forecast the next steps after the end of a series")
    src = f.add_mutually_exclusive_group()
    model = os.path.join(DEFAULT_OUT, artifacts.MODEL_FILE)
    src.add_argument("--model", default=model, help=f"an exported model (default {model})")
    src.add_argument("--checkpoint", help="or a training checkpoint")
    f.add_argument("--csv", help="the series to continue (default: the embedded CO2 data)")
    f.add_argument("--column")
    f.add_argument("--time-column")
    f.add_argument("--steps", type=_option("steps"), default=FORECAST_STEPS,
                   help=f"how many steps ahead (default {FORECAST_STEPS})")
    f.add_argument("--output", "-o", help="write CSV here instead of standard output")
    f.set_defaults(func=_forecast)

    e = sub.add_parser("export", help="export a checkpoint as TorchScript + JSON")
    e.add_argument("--checkpoint", default=os.path.join(DEFAULT_OUT, artifacts.CHECKPOINT))
    e.add_argument("--out", help="output folder (default: the checkpoint's)")
    e.set_defaults(func=_export)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (series.DataError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; continue with --resume",
              file=sys.stderr)
        return 130
