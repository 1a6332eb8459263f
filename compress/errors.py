"""Errors a user can act on. Library code raises them as plain exceptions; the CLI prints one line."""

from __future__ import annotations

import functools
import os


class CompressError(ValueError):
    """A problem with the user's input or files, named in the message."""


_BOTH: dict[type, type] = {}


def as_compress_error(exc: Exception) -> Exception:
    """`exc` (an export or runtime error) as an instance of a subclass of both its own class and
    CompressError, with the same message and attributes."""
    kind = type(exc)
    both = _BOTH.get(kind)
    if both is None:
        # Made at run time, so it pickles as the way to make it again (a worker process sends it back).
        reduce = lambda self: (_rebuilt, (kind, self.args, dict(self.__dict__)))  # noqa: E731
        both = _BOTH.setdefault(kind, type(kind.__name__, (kind, CompressError),
                                           {"__module__": kind.__module__, "__qualname__": kind.__qualname__,
                                            "__reduce__": reduce}))
    return _rebuilt(both, exc.args, exc.__dict__)


def _rebuilt(kind: type, args: tuple, state: dict) -> Exception:
    exc = BaseException.__new__(kind)
    exc.args = args
    exc.__dict__.update(state)
    return exc if isinstance(exc, CompressError) else as_compress_error(exc)


def one_error_class(func):
    """The export and runtime rooms raise their own error classes (they import nothing of this package),
    so `except compress.CompressError` around an entry point of the API would miss them: the entry points
    that reach those rooms re-raise them as CompressErrors too (`except ParityError` still catches them)."""
    @functools.wraps(func)
    def call(*args, **kwargs):
        from compress.exporting.errors import ExportError
        from compress.runtime.errors import RuntimeBenchError

        try:
            return func(*args, **kwargs)
        except (ExportError, RuntimeBenchError) as exc:
            if isinstance(exc, CompressError):
                raise
            raise as_compress_error(exc) from exc
    return call


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" when it has none): what a one-line report quotes."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def write_failure(exc: BaseException, where: str | os.PathLike) -> str | None:
    """One line for a write that failed (a full disk, a read-only folder), or None when `exc` is not one.

    An OSError names its file; safetensors' writer (Rust) wraps the OS error in its own exception type
    ("Error while serializing: I/O error: File too large (os error 27)"), which is recognised by its text.
    """
    from compress.runtime.atomic import final_name

    if isinstance(exc, OSError):
        name = final_name(exc.filename) if exc.filename is not None else where
        return f"cannot write {name}: {exc.strerror or exc or type(exc).__name__}"
    text = str(exc)
    if type(exc).__name__ == "SafetensorError" and "I/O error:" in text:
        reason = text.split("I/O error:", 1)[1].strip()
        return f"cannot write a .safetensors file (weights) in {final_name(where)}: {reason}"
    return None


class MixedImageSizes(CompressError):
    """Images of a dataset differ in size and no input size was given to resize them to one.

    A caller sizing data for a model catches this one (compress.data.options.sized_for) to resize every
    image to the model's input instead; any other CompressError is a real problem with the data."""
