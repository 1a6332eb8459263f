"""Click parameter types that validate numbers at the edge.

click.FloatRange accepts "nan" and "inf": every comparison with NaN is false, so `--lr nan` passes
any range. `FiniteFloat` refuses non-finite values first, then applies the range, in one line that
names the option.
"""

from __future__ import annotations

import math
from pathlib import Path

import click


class FiniteFloat(click.FloatRange):
    """A finite float, optionally within [min, max] (open ends with min_open / max_open)."""

    name = "finite float"

    def __init__(self, min=None, max=None, min_open=False, max_open=False, clamp=False):
        super().__init__(min=min, max=max, min_open=min_open, max_open=max_open, clamp=clamp)

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            text = value.strip()
        else:
            text = value
        try:
            number = float(text)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        if self.min is None and self.max is None:
            return "finite"
        return super()._describe_range()

    def __repr__(self) -> str:
        return f"FiniteFloat({self._describe_range()})" if (self.min is not None or self.max is not None) \
            else "FiniteFloat"


def finite_float(min=None, max=None, min_open=False, max_open=False) -> FiniteFloat:
    return FiniteFloat(min=min, max=max, min_open=min_open, max_open=max_open)


FINITE = FiniteFloat()
POSITIVE = FiniteFloat(min=0, min_open=True)
NON_NEGATIVE = FiniteFloat(min=0)
FRACTION = FiniteFloat(min=0, max=1)
OPEN_FRACTION = FiniteFloat(min=0, max=1, min_open=True, max_open=True)


class Sparsity(click.ParamType):
    """`--sparsity`: λ (a finite number >= 0: the paper's subgradient), `auto` (proximal L1 whose λ is
    steered until the planned percent of γ sits at zero), `targeted` (the same, on the γ of the channels
    the run's prune will remove only: `compress slim`), or `budget:P` (proximal L1 whose total pull over
    the run is P)."""

    name = "λ|auto|targeted|budget:P"

    def get_metavar(self, param, ctx=None) -> str:  # click upper-cases type names; λ must stay λ
        return "λ|auto|targeted|budget:P"

    def convert(self, value, param, ctx):
        from compress.sparsity import Budget, SparsityConfig

        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text == "auto":
            return SparsityConfig()
        if text == "targeted":
            from compress.sparsity_targeted import TargetedSparsity

            return TargetedSparsity()
        if text.startswith("budget:"):
            pull = FINITE.convert(text.split(":", 1)[1], param, ctx)
            if pull <= 0:
                self.fail(f"a pull budget must be positive, got {pull}", param, ctx)
            return SparsityConfig(strength=Budget(pull))
        lam = FINITE.convert(text, param, ctx)
        if lam < 0:
            self.fail(f"λ must be >= 0, got {lam}", param, ctx)
        return lam


SPARSITY = Sparsity()


class RoundTo(click.ParamType):
    """`--round-to`: a whole number >= 1, or `auto` (ONNX Runtime's NCHWc channel block on this CPU)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip().lower()
            if text == "auto":
                return "auto"
            try:
                number = int(text)
            except ValueError:
                self.fail(f"{value!r} is neither a whole number nor 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{number} is under 1", param, ctx)
        return number


ROUND_TO = RoundTo()


class Seed(click.ParamType):
    """A seed every generator we use accepts: [0, MAX_SEED] (compress.limits), refused at parse time,
    before any data is read or a model built."""

    name = "seed"

    def convert(self, value, param, ctx):
        from compress.errors import CompressError
        from compress.limits import check_seed

        try:
            number = int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            self.fail(f"{value!r} is not a whole number", param, ctx)
        try:
            return check_seed(number, "the seed")
        except CompressError as exc:
            self.fail(str(exc), param, ctx)


SEED = Seed()


class GivenPath(click.Path):
    """A path argument or option (a pathlib.Path unless `path_type` says otherwise). An empty one is refused:
    Path('') is the current directory, so `compress info ""` (an unset shell variable) reported ". is not a
    model directory", and other commands read or wrote wherever they were started."""

    def __init__(self, what: str | None = None, **kwargs):
        kwargs.setdefault("path_type", Path)
        super().__init__(**kwargs)
        self.empty = "an empty path would be read as the current directory" + (f"; give {what}" if what else "")

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail(self.empty, param, ctx)
        return super().convert(value, param, ctx)


class OutDir(GivenPath):
    """An output directory: an empty name would write a model into wherever the command was started."""

    def __init__(self):
        super().__init__(file_okay=False)
        self.empty = "an empty name would mean the current directory; give the output directory's path"


OUT_DIR = OutDir()


class Device(click.ParamType):
    """`--device`: cpu, cuda or cuda:N, refused at parse time when torch cannot parse it or this machine
    lacks it (compress.devices), before any data is read."""

    name = "device"

    def convert(self, value, param, ctx):
        from compress.devices import check_device
        from compress.errors import CompressError

        try:
            check_device(value)
        except CompressError as exc:
            self.fail(str(exc), param, ctx)
        return value.strip() if isinstance(value, str) else value


DEVICE = Device()
