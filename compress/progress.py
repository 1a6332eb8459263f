"""Progress of long work (epochs, decoding, calibration) that reads well on a terminal and in a log file.

On a terminal a live tqdm bar redraws itself in place. In a log (CI, ``nohup``, ``> run.log``) those
carriage-return frames pile up by the hundred per epoch, so there the bar is replaced by whole lines: none
while the work runs, unless it runs longer than ``HEARTBEAT_S`` (then one line per ``HEARTBEAT_S``), and
the caller's own line when it ends (``say``). Messages go to stderr: stdout stays for results (``--json``).

    with Progress(len(batches), "train 3/160", unit="batch") as bar:
        for step, batch in enumerate(bar.wrap(batches)):
            ...
            if bar.due():                      # computing a postfix may cost a device sync
                bar.show(loss=f"{loss:.3f}")
    say("train epoch 3/160: loss 0.412 ...")

``COMPRESS_PROGRESS`` overrides the choice: ``bar``, ``lines`` or ``off``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from compress import environment

PROGRESS_ENV = environment.PROGRESS_ENV
MODES = environment.PROGRESS_MODES
HEARTBEAT_S = 120.0  # a log line at most this often while one unit of work runs
BAR_REFRESH_S = 1.0  # how often a terminal bar's postfix is worth computing

_open_bars = 0  # bars currently drawn: `say` must print through tqdm while one is


def _stderr() -> TextIO:
    return sys.stderr


def mode(stream: TextIO | None = None) -> str:
    """'bar' on a terminal, 'lines' otherwise; COMPRESS_PROGRESS (bar, lines, off) decides when set."""
    forced = environment.progress_mode()
    if forced:
        return forced
    stream = stream if stream is not None else _stderr()
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # closed or file-like objects without isatty
        return "lines"


def say(line: str, stream: TextIO | None = None) -> None:
    """One whole line of progress; on a terminal with a bar drawn, printed above the bar."""
    stream = stream if stream is not None else _stderr()
    if mode(stream) == "off":
        return
    if _open_bars and mode(stream) == "bar":
        from tqdm import tqdm

        tqdm.write(line, file=stream)
        return
    print(line, file=stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """One unit of long work: a live bar on a terminal, at most one line per `every_s` in a log."""

    def __init__(self, total: int | None, desc: str, *, unit: str = "it", enabled: bool = True,
                 stream: TextIO | None = None, every_s: float = HEARTBEAT_S):
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = stream if stream is not None else _stderr()
        self.kind = mode(self.stream) if enabled else "off"
        self.every_s = every_s
        self.count = 0
        self.start = self._last = time.monotonic()
        self._bar = None
        if self.kind == "bar":
            global _open_bars
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream,
                             mininterval=BAR_REFRESH_S, dynamic_ncols=True)
            _open_bars += 1

    def wrap(self, iterable):
        """Iterate and count one unit per item."""
        for item in iterable:
            yield item
            self.update()

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def due(self) -> bool:
        """Whether `show` would display something now (so a costly postfix is computed only then)."""
        if self.kind == "off":
            return False
        interval = BAR_REFRESH_S if self.kind == "bar" else self.every_s
        return time.monotonic() - self._last >= interval

    def show(self, **postfix) -> None:
        """Display the postfix: on the bar, or as one log line (with count and elapsed time)."""
        self._last = time.monotonic()
        if self._bar is not None:
            self._bar.set_postfix(postfix, refresh=False)
        elif self.kind == "lines":
            done = f"{self.count}/{self.total}" if self.total else str(self.count)
            share = f" ({self.count / self.total:.0%})" if self.total else ""
            extra = "".join(f", {k} {v}" for k, v in postfix.items())
            print(f"{self.desc}: {done} {self.unit}{share} after {_duration(self._last - self.start)}{extra}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            global _open_bars
            self._bar.close()
            self._bar = None
            _open_bars -= 1

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
