"""How to start a refused stage over: with --no-resume when a command runs one stage, but only with another
--out inside `compress slim`, whose stages build on each other (it refuses --no-resume over finished ones)."""

from __future__ import annotations

import contextlib
import contextvars

_IN_CHAIN = contextvars.ContextVar("compress_in_stage_chain", default=False)
_OPTION = contextvars.ContextVar("compress_stage_option", default="--out")


def restart_advice() -> str:
    option = _OPTION.get()
    return f"use another {option}" if _IN_CHAIN.get() else f"use another {option} or --no-resume"


@contextlib.contextmanager
def stage_option(option: str):
    """Within this block, the stage being written was named by `option` (slim's --sparse-dir), not --out."""
    token = _OPTION.set(option)
    try:
        yield
    finally:
        _OPTION.reset(token)


@contextlib.contextmanager
def stage_chain():
    """Within this block, refusals advise another --out only (compress slim)."""
    token = _IN_CHAIN.set(True)
    try:
        yield
    finally:
        _IN_CHAIN.reset(token)
