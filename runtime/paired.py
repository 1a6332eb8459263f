"""Artifacts timed against the first one, interleaved: a paired comparison that a drifting machine cannot bias.

A shared VM, a laptop on battery or a Jetson without locked clocks changes speed while a benchmark runs:
on the project's 2-core VM the same network's p50 flips between two states 1.2–2× apart within a minute.
Timing one artifact after the other then compares the states the two met, not the two networks. Here the
runners are all open at once and take turns, in blocks: each runs at least `min_iters` iterations and at
least `block_s` seconds, after two warm-up runs and a `settle_s` pause (ONNX Runtime's pool threads
spin-wait after a run and would slow whichever runner comes next), and the order rotates every block and
reverses every other one. The runners of one block meet the same state, so the ratio of each one's median
to the first one's, block by block, cancels it. What comes out per artifact: its median time over blocks,
the median of its per-block ratio to the first, a 95% bootstrap interval of that median, and the blocks'
own 5th and 95th percentiles. An interval wholly under 1 says faster than the first artifact, over 1
slower, holding 1 level.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Mapping

import numpy as np

BLOCK_S = 0.05  # the least time one artifact runs per block: a 0.15 ms batch-1 run alone is mostly noise
SETTLE_S = 0.05
MIN_ITERS = 20
RESAMPLES = 2000
SEED = 0


def interleave(runners: Mapping[str, object], inputs: Mapping[str, np.ndarray], blocks: int, *,
               min_iters: int = MIN_ITERS, warmup: int = 10, block_s: float = BLOCK_S,
               settle_s: float = SETTLE_S) -> tuple[dict[str, list[float]], int]:
    """({name: [median end-to-end ms of each block]}, iterations per block) for runners that all stay open.

    `runners` are compress.runtime runners (anything with `measure(x, warmup=, iters=)` returning
    `end_to_end_ms`), `inputs` the batch each one runs."""
    if blocks < 2:
        raise ValueError(f"a paired comparison needs at least 2 blocks, got {blocks}")
    order = list(runners)
    slowest = 0.0
    for name in order:
        first = runners[name].measure(inputs[name], warmup=warmup, iters=5).end_to_end_ms
        slowest = max(slowest, statistics.median(first))
    iters = max(min_iters, math.ceil(block_s * 1e3 / max(slowest, 1e-3)))
    out: dict[str, list[float]] = {name: [] for name in order}
    for b in range(blocks):
        k = b % len(order)
        sequence = order[k:] + order[:k]
        if b % 2:
            sequence = sequence[::-1]
        for name in sequence:
            if settle_s > 0:
                time.sleep(settle_s)
            timings = runners[name].measure(inputs[name], warmup=2, iters=iters)
            out[name].append(statistics.median(timings.end_to_end_ms))
    return out, iters


def ratios(samples: Mapping[str, list[float]], reference: str, resamples: int = RESAMPLES) -> dict[str, dict]:
    """Per artifact, over blocks, its time over `reference`'s in the same block."""
    ref = np.asarray(samples[reference], dtype=float)
    if len(ref) == 0 or not np.all(np.isfinite(ref)) or np.any(ref <= 0):
        raise ValueError(f"the reference {reference!r} has no usable block times")
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(ref), (resamples, len(ref)))
    out = {}
    for name, values in samples.items():
        r = np.asarray(values, dtype=float) / ref
        boot = np.median(r[picks], axis=1)
        out[name] = {"median_ms": float(np.median(values)), "ratio_median": float(np.median(r)),
                     "ratio_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                     "ratio_p05": float(np.percentile(r, 5)), "ratio_p95": float(np.percentile(r, 95))}
    return out


def verdict(row: Mapping) -> str:
    """'faster', 'slower' or 'level' than the reference, from the 95% interval of the median ratio."""
    lo, hi = row["ratio_ci95"]
    return "faster" if hi < 1 else "slower" if lo > 1 else "level"
