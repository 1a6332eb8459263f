"""Whether decoded images fit in memory: the shares of available RAM that decide between holding a split
in memory and streaming it, and the refusal when memory is forced past what the machine has."""

from __future__ import annotations

from compress.errors import CompressError

MEMORY_SHARE = 0.25  # auto keeps data in memory while its decoded size stays under this share of free RAM
MEMORY_LIMIT = 0.8  # forced in-memory loading is refused above this share


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_fits_memory(nbytes: int, what: str, available: int) -> None:
    if nbytes > MEMORY_LIMIT * available:
        raise CompressError(f"{what} would need {gb(nbytes)} decoded but only {gb(available)} of memory is "
                            "available; stream it instead (mode='stream')")
