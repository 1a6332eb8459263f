"""Magnitude pruning of individual weights and the relative-offset sparse format of Deep Compression.

A pruned tensor is stored as its non-zero entries in row-major order, each with the number of zeros
skipped since the previous entry. Offsets have a fixed width of `offset_bits`; a run of zeros longer
than the largest offset (cap = 2**offset_bits - 1) is bridged with filler entries: a filler skips `cap`
zeros and then stands for one explicit zero, so it advances by cap + 1 positions.
"""

from __future__ import annotations

import numpy as np


def magnitude_mask(weights: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean keep-mask removing the `fraction` of entries with the smallest |w| (ties broken by position)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"pruning fraction must be in [0, 1), got {fraction}")
    flat = np.abs(np.asarray(weights, dtype=np.float32).ravel())
    n_prune = int(np.floor(fraction * flat.size))
    keep = np.ones(flat.size, dtype=bool)
    if n_prune:
        threshold = np.partition(flat, n_prune - 1)[n_prune - 1]
        below = flat < threshold
        keep[below] = False
        # Among magnitudes equal to the threshold, the first ones by position go: reproducible, O(n).
        keep[np.flatnonzero(flat == threshold)[:n_prune - int(below.sum())]] = False
    return keep.reshape(np.shape(weights))


def offset_cap(offset_bits: int) -> int:
    if isinstance(offset_bits, bool) or not isinstance(offset_bits, (int, np.integer)) or not 1 <= offset_bits <= 16:
        raise ValueError(f"offset bits must be an integer in [1, 16], got {offset_bits!r}")
    return (1 << int(offset_bits)) - 1


def encode_positions(positions: np.ndarray, offset_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative offsets for strictly increasing flat `positions`.

    Returns (offsets uint16 [m], filler bool [m]) with m >= len(positions): entry i sits at
    position (sum of offsets[:i+1] + i), and filler entries mark the zeros inserted to bridge long gaps.
    """
    cap = offset_cap(offset_bits)
    pos = np.asarray(positions, dtype=np.int64).ravel()
    if pos.size == 0:
        return np.zeros(0, np.uint16), np.zeros(0, bool)
    gaps = np.diff(pos, prepend=-1) - 1
    if (gaps < 0).any():
        raise ValueError("positions must be strictly increasing and non-negative")
    fillers = gaps // (cap + 1)
    per_entry = fillers + 1
    real_at = np.cumsum(per_entry) - 1
    total = int(real_at[-1]) + 1
    offsets = np.full(total, cap, dtype=np.uint16)
    offsets[real_at] = gaps % (cap + 1)
    filler = np.ones(total, dtype=bool)
    filler[real_at] = False
    return offsets, filler


def decode_positions(offsets: np.ndarray) -> np.ndarray:
    """Flat positions of every entry (fillers included) from their relative offsets."""
    return np.cumsum(np.asarray(offsets, dtype=np.int64) + 1) - 1
