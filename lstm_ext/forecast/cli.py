"""Command line: ``python -m lstm_ext {train,forecast,export}`` (also ``lstm-ext``).

Only the arguments are here: their defaults come from ``settings``, their
checks from ``settings.LIMITS``; each command calls the application's modules.
"""
import argparse
import os
import sys
from dataclasses import fields
from typing import List, Optional

from . import artifacts, evaluation, frequency, panel, series, training
from .forecaster import forecast
from .settings import DEFAULT_OUT, FORECAST_STEPS, LIMITS, TrainConfig

DEFAULTS = TrainConfig()
FORMAT_NAMES = {"torchscript": "TorchScript", "pt2": "AOTInductor package", "onnx": "ONNX"}


def _train(args) -> int:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    training.run(cfg, resume=args.resume, force=args.force, baselines=args.baselines)
    return 0


def _freq_of(observed, meta) -> Optional[str]:
    """The frequency future times follow: the model's, else the series' own."""
    if observed.times is None:
        return None
    if meta.get("freq"):
        return meta["freq"]
    try:
        return frequency.infer_freq(observed.times, observed.source, str(observed.time_column))
    except series.DataError:
        return None


def _forecast(args) -> int:
    forecaster, meta, source = artifacts.load_forecaster(args.model, args.checkpoint)
    if series.file_is_long_format(args.csv, args.column):   # every series of the file
        if not meta.get("per_window"):
            raise ValueError(f"{source}: a model of one series; {args.csv} is a long-format "
                             "file of several: train one model on it (python -m lstm_ext "
                             "train --csv FILE) and forecast with that")
        text = panel.forecast_command(forecaster, meta, source, args.csv, args.steps)
        return _write_forecast(text, args)
    if meta.get("per_window") and args.csv is None:
        raise ValueError(f"{source}: a model of several series (trained on a long-format "
                         "file): give the series to continue with --csv")
    if meta.get("per_window"):  # a global model continues any one series: not its columns
        meta = dict(meta, column=None, time_column=None)
    observed = series.load_to_continue(meta, args.csv, args.column, args.time_column)
    freq = _freq_of(observed, meta)
    if observed.times is not None and freq is not None:
        before, own = len(observed), _freq_of(observed, {})
        observed = frequency.regularise(observed, freq)
        if meta.get("per_window") and len(observed) != before and own != freq:
            raise ValueError(f"{observed.source}: its frequency is not the model's ({freq}): "
                             "forecast series of the frequency the model was trained on")
    values = forecast(forecaster, observed.values, meta["window"], args.steps, source)
    intervals = None
    widths = panel.interval_widths(meta, observed.values, args.steps)
    if widths:
        intervals = {level: (values - w, values + w) for level, w in widths.items()}
    text = series.forecast_csv(observed, values, freq, intervals)
    return _write_forecast(text, args)


def _write_forecast(text: str, args) -> int:
    if args.output:
        try:
            with open(args.output, "w") as f:
                f.write(text)
        except OSError as exc:
            raise ValueError(f"--output {args.output}: cannot write the forecast there "
                             f"({exc.strerror})") from None
        print(f"wrote {args.steps} forecast steps to {args.output}"
              + (" for every series" if text.startswith("unique_id,") else ""))
    else:
        sys.stdout.write(text)
    return 0


def _export(args) -> int:
    ckpt = artifacts.load_checkpoint(args.checkpoint)
    cfg = TrainConfig(**ckpt["config"])
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    artifacts.make_out_dir(out)
    meta = artifacts.model_meta(cfg, ckpt["scaler"], ckpt["best_epoch"],
                                intervals=ckpt["intervals"])
    path = artifacts.export(artifacts.forecaster_from_checkpoint(ckpt), meta, out,
                            fmt=args.format)
    print(f"wrote {path} ({FORMAT_NAMES[args.format]}) and "
          f"{os.path.join(out, artifacts.META_FILE)}")
    return 0


def _backtest(args) -> int:
    from dataclasses import replace
    from .windows import prepare
    ckpt = artifacts.load_checkpoint(args.checkpoint)
    cfg = TrainConfig(**ckpt["config"])
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    several = panel.is_panel_checkpoint(ckpt)
    changed = ValueError(f"{args.checkpoint}: trained on "
                         f"{'several series' if several else 'one series'}, but {cfg.csv} "
                         f"now holds {'one' if several else 'several (long format)'}: backtest "
                         "the run on the file it was trained on")
    # Before reading it as several series, whose checks would say something else.
    if not several and series.file_is_long_format(cfg.csv, cfg.column):
        raise changed
    prep = prepare(replace(cfg, out=out))     # the same data, split and settings
    if several and prep.panel is None:
        raise changed
    artifacts.make_out_dir(out)
    # A long-format run: every series, then the means over series (panel.py).
    run = panel.backtest if several else evaluation.backtest
    run(prep, artifacts.forecaster_from_checkpoint(ckpt), prep.cfg, args.origins, out, print,
        args.baselines == "all")
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
    t.add_argument("--csv", help="a CSV file with your own series (default: the embedded CO2 "
                   "data); a long-format file (unique_id, ds, y) trains one model across its "
                   "series")
    t.add_argument("--column", help="the numeric column to forecast")
    t.add_argument("--time-column", help="a date/time column (orders rows, fills gaps in "
                   "time; default: a column named date, ds, year, ... or holding dates)")
    t.add_argument("--freq", default=d.freq,
                   help="the sampling frequency, a pandas alias (W-SAT, MS, QS, YS, D, h, "
                        "30min); default: inferred from the times. Missing times are filled")
    t.add_argument("--window", type=_option("window"), default=d.window,
                   help="past steps the model sees (default: from the frequency, "
                        "e.g. 104 for weekly, 36 monthly, 20 yearly data)")
    t.add_argument("--horizon", type=_option("horizon"), default=d.horizon,
                   help="future steps it predicts (default: from the frequency, "
                        "e.g. 13 weekly, 12 monthly, 6 yearly)")
    t.add_argument("--season", type=_option("season"), default=d.season,
                   help="seasonal period in steps for seasonal naive and ETS, 1 for none "
                        "(default: from the frequency, e.g. 52 weekly, 12 monthly)")
    t.add_argument("--period", type=_option("period"), default=d.period,
                   help="seasonal period for the ARIMA's Fourier terms, may be fractional "
                        "(default: from the frequency, 365.25/7 for weekly data)")
    t.add_argument("--hidden-size", type=_option("hidden_size"), default=d.hidden_size)
    t.add_argument("--num-layers", type=_option("num_layers"), default=d.num_layers)
    t.add_argument("--lr", type=_option("lr"), default=d.lr)
    t.add_argument("--batch-size", type=_option("batch_size"), default=d.batch_size)
    t.add_argument("--epochs", type=_option("epochs"), default=d.epochs)
    t.add_argument("--patience", type=_option("patience"), default=d.patience,
                   help="stop after this many epochs without a better validation loss")
    t.add_argument("--seed", type=_option("seed"), default=d.seed)
    t.add_argument("--out", default=d.out,
                   help=f"output folder (default: {DEFAULT_OUT} for the embedded data, else "
                        "runs/FILE-COLUMN; an earlier run there is never overwritten without "
                        "--force: a default folder gives way to FOLDER-2, ...)")
    t.add_argument("--bf16", action="store_true",
                   help="mixed-precision training: the LSTM's forward and the loss under "
                        "bfloat16 autocast, float32 weights and optimizer (bf16 kernels, AMX "
                        "where the CPU has it); validation, test metrics and the exported "
                        "model stay float32")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    t.add_argument("--force", action="store_true", help="overwrite an earlier run in OUT")
    t.add_argument("--baselines", choices=("all", "naive"), default="all",
                   help="all (default): persistence, seasonal naive, ETS, auto-ARIMA, Theta; "
                        "naive: the first two only (seconds quicker on long series)")
    t.set_defaults(func=_train)

    f = sub.add_parser("forecast", help="forecast the next steps after the end of a series")
    src = f.add_mutually_exclusive_group()
    model = os.path.join(DEFAULT_OUT, artifacts.MODEL_FILE)
    src.add_argument("--model", default=model, help=f"an exported model (default {model})")
    src.add_argument("--checkpoint", help="or a training checkpoint")
    f.add_argument("--csv", help="the series to continue (default: the embedded CO2 data); "
                   "a long-format file: every series, long-format output")
    f.add_argument("--column")
    f.add_argument("--time-column")
    f.add_argument("--steps", type=_option("steps"), default=FORECAST_STEPS,
                   help=f"how many steps ahead (default {FORECAST_STEPS})")
    f.add_argument("--output", "-o", help="write CSV here instead of standard output")
    f.set_defaults(func=_forecast)

    b = sub.add_parser("backtest", help="rolling-origin evaluation of a trained run against "
                                        "every baseline: per lead time, table, JSON, plot")
    b.add_argument("--checkpoint", default=os.path.join(DEFAULT_OUT, artifacts.CHECKPOINT))
    b.add_argument("--origins", type=_option("origins"), default=20,
                   help="how many forecast origins, spread over the test part (default 20)")
    b.add_argument("--baselines", choices=("all", "naive"), default="all")
    b.add_argument("--out", help="output folder (default: the checkpoint's)")
    b.set_defaults(func=_backtest)

    e = sub.add_parser("export", help="export a checkpoint as TorchScript, an AOTInductor "
                                      "package or ONNX, + JSON")
    e.add_argument("--checkpoint", default=os.path.join(DEFAULT_OUT, artifacts.CHECKPOINT))
    e.add_argument("--out", help="output folder (default: the checkpoint's)")
    e.add_argument("--format", choices=artifacts.exported.EXPORT_FORMATS, default="torchscript",
                   help="torchscript (model.pt, default), pt2 (AOTInductor package model.pt2, "
                        "for torch::inductor::AOTIModelPackageLoader) or onnx (model.onnx)")
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
