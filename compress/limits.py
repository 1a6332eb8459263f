"""Bounds on what a file or an option may ask for, checked before any work (docs/SECURITY.md).

A model directory, plan, ONNX file or dataset may come from a stranger. Everything such a file or an
option can make the toolkit allocate, read or loop over is bounded here, by a named constant that the
error message names, so a crafted 9.6M-index plan or a 3 GB model.json is refused in a second instead
of running for hours or exhausting memory.

* the named bounds (`MAX_*`), the single source for compress/ (models/ and runtime/ import no
  compress code and keep their own copies: models/ for depths, runtime/ for threads);
* `check_allocation(n, dtype, what)`: an allocation larger than the memory available now is refused,
  with the figure in the message;
* `regular_file(path, what)`: inputs must be regular files (or directories where a folder is
  accepted): a FIFO blocks forever, `/dev/zero` reads forever;
* `read_json(path, what)` / `parse_json(text, what)`: strict, bounded JSON: size, nesting depth,
  UTF-8, no duplicate keys, no NaN/Infinity literals, each refused in one line naming the file.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import CompressError
from compress.runtime.memory import available_memory

# --- the named bounds -------------------------------------------------------------------------------
MAX_WIDTH = 1 << 20           # channels or features of one layer
MAX_LAYERS = 100_000          # layers in a model.json, groups + selections in a plan
MAX_PLAN_CHANNELS = 1 << 22   # BN channels a plan may list in all (ResNet-152 has about 150k)
MAX_CLASSES = 1 << 20         # classes of a model or a dataset
MAX_IMAGE_SIDE = 1 << 14      # pixels of a model input's side
MAX_CHANNELS = 64             # image channels
MAX_IMAGE_PIXELS = 1 << 27    # pixels of one image file (400 MB decoded), checked from its header first
MAX_IMAGE_BYTES = 1 << 30     # bytes of one image file, checked when it is listed (a 2^27-pixel 16-bit TIFF fits)
MAX_ARCHIVE_EXPANSION = 100   # decompressed / compressed size of a dataset archive (images: 1-10x)
MIN_ARCHIVE_BOUND = 1 << 30   # ... but a small archive may always decompress to this much
MAX_BATCH = 1 << 16           # images in one batch (export, bench, evaluation)
MAX_THREADS = 1024            # threads a runtime may be asked to start
MAX_SEED = 2 ** 32 - 1        # the widest seed every RNG we use accepts (numpy's legacy seed is 32-bit)
MAX_JSON_BYTES = 64 << 20     # model.json, plan.json, ONNX metadata values (a VGG-19 plan is ~100 kB)
MAX_JSON_DEPTH = 64           # nesting of JSON arrays and objects (ours nest at most 5 deep)

FLOAT32_MAX = float(np.finfo(np.float32).max)  # learning rates, decays, γ: what a float32 tensor can hold

# Never refuse small allocations because of a misread memory figure.
_FLOOR = 64 * 2**20


class TooLargeError(CompressError):
    """An allocation, a file or a count that a file or an option asks for exceeds its bound."""


class NotRegularFileError(CompressError):
    """An input is a FIFO, a device or a socket: reading it could block or never end."""


class UnreadableFileError(CompressError):
    """A file that cannot be parsed: not UTF-8, not JSON, nested too deep, duplicate keys, NaN."""


def human_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def element_count(shape, what: str) -> int:
    """The number of elements of `shape`, after checking every dimension is a non-negative integer."""
    dims = list(shape)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
            raise CompressError(f"{what}: shape {dims!r} must hold non-negative integers")
    return math.prod(int(d) for d in dims)


def check_allocation(n_elements: int, dtype="float32", what: str = "tensor",
                     available: int | None = None) -> int:
    """Bytes that `n_elements` of `dtype` need; TooLargeError when that exceeds available memory."""
    if isinstance(n_elements, bool) or not isinstance(n_elements, (int, np.integer)) or n_elements < 0:
        raise CompressError(f"{what}: element count must be a non-negative integer, got {n_elements!r}")
    need = int(n_elements) * np.dtype(dtype).itemsize
    limit = max(available_memory() if available is None else int(available), _FLOOR)
    if need > limit:
        raise TooLargeError(f"{what} needs {human_bytes(need)} ({int(n_elements):,} × {np.dtype(dtype).name}), "
                            f"more than the {human_bytes(limit)} of memory available")
    return need


def check_count(value: int, bound: int, what: str, bound_name: str) -> int:
    """`value` (a count read from a file or an option) against a named bound: TooLargeError naming both."""
    if value > bound:
        raise TooLargeError(f"{what} is {value:,}, over the bound of {bound:,} ({bound_name})")
    return value


def check_float32(value: Any, what: str, *, positive: bool = False) -> float:
    """A finite number that a float32 tensor can hold: 1e308 passes float() but overflows torch's
    optimizers ("value cannot be converted to type float without overflow")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise CompressError(f"{what} must be a finite number, got {value!r}")
    if abs(value) > FLOAT32_MAX:
        raise CompressError(f"{what} is {value:g}, beyond what float32 can hold ({FLOAT32_MAX:.3g}, FLOAT32_MAX)")
    if positive and value <= 0:
        raise CompressError(f"{what} must be > 0, got {value:g}")
    return float(value)


def check_seed(seed: Any, what: str = "seed") -> int:
    """A whole number in [0, MAX_SEED]: larger ones overflow torch's and numpy's generators."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise CompressError(f"{what} must be a whole number, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise CompressError(f"{what} must lie in [0, {MAX_SEED}] (MAX_SEED), got {seed}")
    return int(seed)


# --- inputs that are not regular files ----------------------------------------------------------------

def kind_of(mode: int) -> str:
    """What a stat mode names, in words (for messages)."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a special file"


def regular_file(path: str | os.PathLike, what: str = "", *, directory_ok: bool = False) -> os.stat_result:
    """The stat of `path` (symlinks followed) when it is a regular file, or a directory with
    `directory_ok`; NotRegularFileError otherwise. Never opens the path, so a FIFO cannot block it.
    A missing path raises FileNotFoundError: callers word "not found" in their own terms."""
    st = os.stat(path)
    if stat.S_ISREG(st.st_mode) or (directory_ok and stat.S_ISDIR(st.st_mode)):
        return st
    wanted = "a regular file or directory" if directory_ok else "a regular file"
    name = f"{what} {os.fspath(path)}" if what else os.fspath(path)
    raise NotRegularFileError(f"{name} is {kind_of(st.st_mode)}, not {wanted}")


# --- strict, bounded JSON ------------------------------------------------------------------------------
# One reader for the whole project: compress.runtime.strict_json (the runtime may import nothing of ours, so
# it lives there). These wrappers add the toolkit's named bounds and its error classes.

def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON (iterative, so a deep value cannot exhaust the stack), stopping
    early once `limit` is passed."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(text: str | bytes, what: str, *, max_bytes: int = MAX_JSON_BYTES,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON from `text`, refused in one line naming `what` when it is too large, not UTF-8,
    nested deeper than `max_depth`, holds a duplicate key or NaN/Infinity, or is not JSON."""
    from compress.runtime.errors import InputFileError
    from compress.runtime.strict_json import parse_json as strict_parse

    size = len(text)  # characters of a str: at most its UTF-8 bytes, and no copy
    if size > max_bytes:
        raise TooLargeError(f"{what} is {human_bytes(size)}, over the bound of {human_bytes(max_bytes)} for JSON "
                            "(MAX_JSON_BYTES)")
    try:
        return strict_parse(text, what, max_bytes=max_bytes, max_depth=max_depth)
    except InputFileError as exc:
        raise UnreadableFileError(f"{exc} (MAX_JSON_DEPTH)" if "deeper than" in str(exc) else str(exc)) from None
    except MemoryError:
        raise TooLargeError(f"{what} is too large to parse in the memory available") from None


def read_json(path: str | os.PathLike, what: str | None = None, *, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON from the file `path` (see `parse_json`), after checking it is a regular file no larger
    than `max_bytes`, before reading a byte of it. A missing file raises FileNotFoundError."""
    path = Path(path)
    what = what or str(path)
    st = regular_file(path, what if what != str(path) else "")
    if st.st_size > max_bytes:
        raise TooLargeError(f"{what} is {human_bytes(st.st_size)}, over the bound of {human_bytes(max_bytes)} "
                            "for JSON (MAX_JSON_BYTES)")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise UnreadableFileError(f"cannot read {what}: {exc.strerror or exc}") from None
    return parse_json(data, what, max_bytes=max_bytes, max_depth=max_depth)
