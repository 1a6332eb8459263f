"""How to start a refused stage over: with --no-resume when a command runs one stage, but only with another
--out inside `compress slim`, whose stages build on each other (it refuses --no-resume over finished ones)."""

from __future__ import annotations

import contextlib
import contextvars

_IN_CHAIN = contextvars.ContextVar("compress_in_stage_chain", default=False)


def restart_advice() -> str:
    return "use another --out" if _IN_CHAIN.get() else "use another --out or --no-resume"


@contextlib.contextmanager
def stage_chain():
    """Within this block, refusals advise another --out only (compress slim)."""
    token = _IN_CHAIN.set(True)
    try:
        yield
    finally:
        _IN_CHAIN.reset(token)
