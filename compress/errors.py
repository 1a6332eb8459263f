"""Errors a user can act on. Library code raises them as plain exceptions; the CLI prints one line."""

from __future__ import annotations

import os


class CompressError(ValueError):
    """A problem with the user's input or files, named in the message."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" when it has none): what a one-line report quotes."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def write_failure(exc: BaseException, where: str | os.PathLike) -> str | None:
    """One line for a write that failed (a full disk, a read-only folder), or None when `exc` is not one.

    An OSError names its file; safetensors' writer (Rust) wraps the OS error in its own exception type
    ("Error while serializing: I/O error: File too large (os error 27)"), which is recognised by its text.
    """
    if isinstance(exc, OSError):
        name = exc.filename if exc.filename is not None else where
        return f"cannot write {name}: {exc.strerror or exc or type(exc).__name__}"
    text = str(exc)
    if type(exc).__name__ == "SafetensorError" and "I/O error:" in text:
        reason = text.split("I/O error:", 1)[1].strip()
        return f"cannot write {where}: {reason}"
    return None


class MixedImageSizes(CompressError):
    """Images of a dataset differ in size and no input size was given to resize them to one.

    A caller sizing data for a model catches this one (compress.data.options.sized_for) to resize every
    image to the model's input instead; any other CompressError is a real problem with the data."""
