"""The time window of one command on the GPU machine, and the output folder that comes back from it.

A step is admitted only when its estimate fits in the time left (with a margin); once admitted it runs
under an alarm set to the time it was given, so a step that overruns is stopped (as StepOverrun, a
BaseException that `except Exception` in library code does not swallow) and the next step still gets
its turn. What comes back from the machine is at most MAX_FILES files of at most MAX_FILE_BYTES each.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2 ** 20 - 64 * 2 ** 10  # under the 16 MiB limit, with room to spare
MARGIN_S = 10.0  # kept back from every admission: process exit, copying the outputs
SUB_MARGIN_S = 1.0  # the same within one step's own window
RESULTS = "results.json"
LOG = "run.log"


class StepOverrun(BaseException):
    """A step ran past the time it was admitted with."""


class Window:
    """Seconds left before `deadline_s` after `start`; admits steps that fit."""

    def __init__(self, deadline_s: float, margin_s: float = MARGIN_S, start: float | None = None):
        self.start = time.monotonic() if start is None else start
        self.deadline = self.start + float(deadline_s)
        self.margin = margin_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def admits(self, estimate_s: float) -> tuple[bool, str]:
        left = self.left() - self.margin
        if estimate_s <= left:
            return True, ""
        return False, f"needs about {estimate_s:.0f} s, {max(left, 0):.0f} s left in the window"

    @contextlib.contextmanager
    def guard(self, seconds: float):
        """Raise StepOverrun in the main thread if the block runs longer than `seconds` (or the window).

        Guards nest: an inner one never outlasts the outer, and the outer's alarm is re-armed on the way out.
        """
        seconds = max(0.5, min(seconds, self.left() - self.margin / 2))
        outer, _ = signal.getitimer(signal.ITIMER_REAL)
        if outer:
            seconds = min(seconds, outer)
        entered = time.monotonic()

        def overrun(signum, frame):
            raise StepOverrun(f"stopped after {seconds:.0f} s, the time it was given")

        previous = signal.signal(signal.SIGALRM, overrun)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if outer:
                # The outer guard's alarm, less the time spent here (at least a moment, so it still fires).
                signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - entered), 0.01))


class Results:
    """results.json in the output folder: one entry per step, rewritten atomically after each step."""

    def __init__(self, out: Path):
        self.path = out / RESULTS
        self.data = {"steps": {}}
        if self.path.exists():
            self.data = json.loads(self.path.read_text())

    def done(self, step: str) -> bool:
        return (self.data["steps"].get(step) or {}).get("status") == "ok"

    def get(self, step: str) -> dict | None:
        return self.data["steps"].get(step)

    def record(self, step: str, entry: dict) -> None:
        self.data["steps"][step] = entry
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(finite(self.data), indent=1, default=str, allow_nan=False))
        os.replace(tmp, self.path)


def finite(value):
    """The same structure with NaN and infinities as None: a strange figure must not cost the file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class Tee:
    """A text stream that writes to the console and to the log file (never a terminal: progress prints lines)."""

    def __init__(self, console, log):
        self.console, self.log = console, log

    def write(self, text: str) -> int:
        self.console.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.console.fileno()


@contextlib.contextmanager
def logging_to(path: Path):
    """stdout and stderr of this process also go to `path` (appended: a second command adds to it)."""
    with open(path, "a", buffering=1) as log:
        log.write(f"\n==== {utc_now()} {' '.join(sys.argv)}\n")
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(saved[0], log), Tee(saved[1], log)
        try:
            yield log
        finally:
            sys.stdout, sys.stderr = saved


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def export(out: Path, names: list[str], dest: Path) -> list[str]:
    """Copy the named files of `out` to `dest` (what comes back from the machine): at most MAX_FILES, each
    under MAX_FILE_BYTES; a log that grew past that keeps its end. Returns what was left out, and why."""
    dest.mkdir(parents=True, exist_ok=True)
    left_out = []
    present = [n for n in names if (out / n).is_file()]
    for name in present[MAX_FILES:]:
        left_out.append(f"{name} (more than {MAX_FILES} files)")
    for name in present[:MAX_FILES]:
        src, size = out / name, (out / name).stat().st_size
        if size <= MAX_FILE_BYTES:
            shutil.copyfile(src, dest / name)
        elif name == LOG:
            with open(src, "rb") as fh:
                fh.seek(size - MAX_FILE_BYTES)
                (dest / name).write_bytes(b"[... earlier lines cut to fit 16 MiB ...]\n" + fh.read()[64:])
        else:
            left_out.append(f"{name} ({size} bytes, over the limit)")
    return left_out
