"""The forecasting settings in one place: their defaults (``TrainConfig``, and
the forecast command's), which the command line offers, and their allowed
values (``LIMITS``), against which the command line's options (argparse
``type=`` functions), a checkpoint's config and ``model.json`` are all checked."""
import math
import os
from dataclasses import dataclass, fields
from typing import Optional, Union

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32

Number = Union[int, float]


def _show(x: Number) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def brief(value, limit: int = 60) -> str:
    """``repr(value)``, shortened: a hostile file's value must not flood a message."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python will print
        return f"a {type(value).__name__} too long to show"
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class Limit:
    """A number of type ``kind`` (int: an integer; float: a finite number) from
    ``low`` (excluded when ``low_open``) to ``high``."""
    kind: type
    low: Optional[Number] = None
    high: Optional[Number] = None
    low_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None and not self.low_open:
            return f"{what} from {_show(self.low)} to {_show(self.high)}"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_show(self.low)}")
        if self.high is not None:
            bounds.append(f"<= {_show(self.high)}")
        return " ".join([what, " and ".join(bounds)]).strip()

    def check(self, value):
        """``value`` as ``kind`` if it is one (bools are not numbers here) and
        in range; else ValueError("expected ..., but got ...")."""
        if self.allows(value):
            return self.kind(value)
        raise ValueError(f"expected {self.describe()}, but got {brief(value)}")

    def parse(self, text: str):
        """``check`` for command-line text."""
        try:
            value = int(text) if self.kind is int else float(text)
        except ValueError:
            raise ValueError(f"expected {self.describe()}, but got {brief(text)}") from None
        return self.check(value)

    def allows(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if self.kind is float:
            try:
                value = float(value)
            except OverflowError:  # an int beyond float's range
                return False
            if not math.isfinite(value):
                return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


# Upper bounds are far beyond any useful value: they keep a typo (or a hostile
# checkpoint) from overflowing float arithmetic, running for ever, or
# allocating until the machine runs out of memory (16 layers of 4096 take 4 GiB).
COUNT_MAX = 10 ** 9

LIMITS = {
    "window": Limit(int, 2, COUNT_MAX),
    "horizon": Limit(int, 1, COUNT_MAX),
    "season": Limit(int, 1, COUNT_MAX),  # and at most the series allows: series.check_season
    "period": Limit(float, 1.0, COUNT_MAX),  # the seasonal period for Fourier terms (1: none)
    "hidden_size": Limit(int, 1, 4096),
    "num_layers": Limit(int, 1, 16),
    "lr": Limit(float, 0.0, low_open=True),
    "batch_size": Limit(int, 1, COUNT_MAX),
    "epochs": Limit(int, 1, COUNT_MAX),
    "patience": Limit(int, 1, COUNT_MAX),
    "seed": Limit(int, -2 ** 63, 2 ** 64 - 1),  # what torch.manual_seed takes
    "steps": Limit(int, 1, 1_000_000),
    "origins": Limit(int, 1, 1_000_000),
    # the scaling a forecaster divides and multiplies by, in float32: normal numbers
    "scale": Limit(float, FLOAT32_TINY, FLOAT32_MAX),
    "target_scale": Limit(float, FLOAT32_TINY, FLOAT32_MAX),
}


def check_setting(what: str, limit: Limit, value):
    """``limit.check(value)``, the message prefixed with ``what`` (where the value is)."""
    try:
        return limit.check(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


RUNS = "runs"
DEFAULT_OUT = os.path.join(RUNS, "co2")  # where train writes on the embedded series, and
                                         # forecast/export read by default
FORECAST_STEPS = 52                        # how far the forecast command looks ahead


# The settings inferred from the data's frequency when not given (None):
# ``frequency.defaults_for`` (weekly data: window 104, horizon 13, season 52,
# period 365.25/7). A checkpoint's config holds them resolved.
INFERRED = ("freq", "window", "horizon", "season", "period")


@dataclass
class TrainConfig:
    """The settings of a training run, with their defaults (the command line's)."""
    csv: Optional[str] = None          # None: the embedded Mauna Loa weekly CO2 series
    column: Optional[str] = None
    time_column: Optional[str] = None
    freq: Optional[str] = None         # pandas frequency; None: inferred from the times
    window: Optional[int] = None
    horizon: Optional[int] = None
    season: Optional[int] = None       # seasonal-naive lag in steps (1: none)
    period: Optional[float] = None     # seasonal period for Fourier terms (1: none)
    hidden_size: int = 32
    num_layers: int = 1
    lr: float = 0.005
    batch_size: int = 64
    epochs: int = 60
    patience: int = 10
    seed: int = 0
    out: Optional[str] = None          # None: runs/ named after the data
    bf16: bool = False                 # train under bfloat16 autocast (float32 weights)


# Settings added after checkpoints were first written: an older checkpoint's
# config lacks them and had the default then (bf16: float32 training).
LATER_SETTINGS = {"bf16": False}


def with_later_settings(settings: dict) -> dict:
    """A checkpoint's config with the settings it predates at their defaults."""
    return {**LATER_SETTINGS, **settings}


def precision_note(bf16: bool) -> str:
    """How a run was trained and evaluated, for its report."""
    if not bf16:
        return "precision: float32"
    return ("precision: bfloat16 mixed (--bf16: the LSTM and its head under torch.autocast, "
            "float32 master weights and optimizer); validation and test evaluated in float32 "
            "with the trained weights")


def check_config(settings) -> TrainConfig:
    """The TrainConfig of a dict of settings (a checkpoint's), every setting
    checked: ValueError names the first one missing, unknown or out of range."""
    if not isinstance(settings, dict):
        raise ValueError(f"'config': expected a dict of settings, "
                         f"but got a {type(settings).__name__}")
    names = [f.name for f in fields(TrainConfig)]
    settings = with_later_settings(settings)
    for name in settings:
        if name not in names:
            raise ValueError(f"'config': unknown setting {brief(name)}")
    for name in names:
        if name not in settings:
            raise ValueError(f"'config': setting '{name}' is missing")
        value = settings[name]
        if name in INFERRED and name != "freq" and value is None:
            raise ValueError(f"config '{name}': expected the value training used, but got None")
        if name in LIMITS:
            check_setting(f"config '{name}'", LIMITS[name], value)
        elif name == "bf16":
            if not isinstance(value, bool):
                raise ValueError(f"config 'bf16': expected true or false, but got {brief(value)}")
        elif not (isinstance(value, str) or (value is None and name != "out")):
            raise ValueError(f"config '{name}': expected text{'' if name == 'out' else ' or None'}"
                             f", but got {brief(value)}")
    if settings["freq"] is not None:
        # Imported here: frequency needs pandas, and this module is imported with the
        # Forecaster by the op tests, whose environments (make test-torch) lack it.
        from .frequency import parse_freq
        parse_freq(settings["freq"], "config 'freq'")
    if isinstance(settings["period"], int):
        settings = dict(settings, period=float(settings["period"]))
    return TrainConfig(**settings)
