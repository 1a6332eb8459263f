"""Sizes bounded before allocation: a crafted file must not make the toolkit try to allocate
hundreds of gigabytes before anything checks it.

`check_allocation(n, dtype, what)` refuses, with the figure in the message, an allocation larger
than the memory available now (MemAvailable, or physical memory where /proc is absent).
"""

from __future__ import annotations

import math
import os

import numpy as np

from compress.errors import CompressError

# Never refuse small allocations because of a misread memory figure.
_FLOOR = 64 * 2**20


class TooLargeError(CompressError):
    """An allocation a file or an option asks for exceeds the machine's memory."""


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable from /proc/meminfo when readable)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**40


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
