"""The allowed values of the forecasting settings, in one place: the command
line's options (argparse ``type=`` functions), a checkpoint's config and
``model.json`` are all checked against ``LIMITS``."""
import math
from dataclasses import dataclass
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
    "season": Limit(int, 1, COUNT_MAX),  # and at most the series allows: data.check_season
    "hidden_size": Limit(int, 1, 4096),
    "num_layers": Limit(int, 1, 16),
    "lr": Limit(float, 0.0, low_open=True),
    "batch_size": Limit(int, 1, COUNT_MAX),
    "epochs": Limit(int, 1, COUNT_MAX),
    "patience": Limit(int, 1, COUNT_MAX),
    "seed": Limit(int, -2 ** 63, 2 ** 64 - 1),  # what torch.manual_seed takes
    "steps": Limit(int, 1, 1_000_000),
    # the scaling a forecaster divides and multiplies by, in float32: normal numbers
    "scale": Limit(float, FLOAT32_TINY, FLOAT32_MAX),
    "target_scale": Limit(float, FLOAT32_TINY, FLOAT32_MAX),
}
