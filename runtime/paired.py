"""Artifacts timed against the first one, in turns: a paired comparison that cancels a drifting machine's speed.

A shared VM, a laptop on battery or a Jetson without locked clocks changes speed while a benchmark runs:
on the project's 2-core VM the same network's p50 flips between two states 1.2–2× apart within a minute.
Timing one artifact after the other then compares the states the two met, not the two networks. Here the
runners are all open at once and take turns, in blocks. In a block each runs the same number of
iterations: at least `min_iters`, and as many more as take the slowest of them `block_s` seconds, each
after two warm-up runs and a `settle_s` pause (ONNX Runtime's pool threads spin-wait after a run and would
slow whichever runner comes next). Which runner goes first changes every two blocks and the order
reverses every other block, so each runner goes first, and last, equally often over a full cycle. The
runners of one block meet the same state, so the ratio of each one's median to the first one's, block by
block, cancels it. What it cannot cancel is a change of state that slows some layers more than others
(memory bandwidth taken by a neighbour slows wide early layers more than compute-bound late ones): on
the project's VM such a change moved the ratios of two networks by up to 4.5%. Compare runs only where
the reference's own time (`median_ms`) agrees.

What comes out per artifact: its median time over blocks, the median of its per-block ratio to the first,
a 95% interval of that median from the order statistics of the blocks (distribution-free, so it holds
for any spread of the ratios; at least MIN_BLOCKS blocks are needed for it to reach 95%), and the blocks'
own 5th and 95th percentiles. An interval wholly under 1 says faster than the first artifact, over 1
slower, holding 1 level.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Mapping

import numpy as np

BLOCK_S = 0.05  # the least time the slowest runner runs per block: a 0.15 ms batch-1 run alone is mostly noise
SETTLE_S = 0.05
MIN_ITERS = 20
MIN_BLOCKS = 6  # the fewest blocks whose extreme order statistics bound the median at 95% or more
MAX_BLOCKS = 10_000


def check_blocks(blocks: int) -> int:
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not MIN_BLOCKS <= blocks <= MAX_BLOCKS:
        raise ValueError(f"a paired comparison takes {MIN_BLOCKS} to {MAX_BLOCKS} blocks (fewer give no 95% "
                         f"interval of the median), got {blocks!r}")
    return blocks


def order(names: list, block: int) -> list:
    """The turn order of one block: the first runner changes every two blocks, and odd blocks run reversed."""
    k = (block // 2) % len(names)
    sequence = names[k:] + names[:k]
    return sequence[::-1] if block % 2 else sequence


def interleave(runners: Mapping[str, object], inputs: Mapping[str, np.ndarray], blocks: int, *,
               min_iters: int = MIN_ITERS, warmup: int = 10, block_s: float = BLOCK_S,
               settle_s: float = SETTLE_S) -> tuple[dict[str, list[float]], int, float]:
    """({name: [median end-to-end ms of each block]}, iterations per runner per block, median block seconds)
    for runners that all stay open.

    `runners` are compress.runtime runners (anything with `measure(x, warmup=, iters=)` returning
    `end_to_end_ms`), `inputs` the batch each one runs."""
    check_blocks(blocks)
    names = list(runners)
    slowest = 0.0
    for name in names:
        first = runners[name].measure(inputs[name], warmup=warmup, iters=5).end_to_end_ms
        slowest = max(slowest, statistics.median(first))
    # A runner far faster than the clock's resolution still runs a bounded number of iterations.
    iters = max(min_iters, min(math.ceil(block_s * 1e3 / max(slowest, 1e-3)), 100_000))
    out: dict[str, list[float]] = {name: [] for name in names}
    block_times = []
    for b in range(blocks):
        t0 = time.perf_counter()
        for name in order(names, b):
            if settle_s > 0:
                time.sleep(settle_s)
            timings = runners[name].measure(inputs[name], warmup=2, iters=iters)
            out[name].append(statistics.median(timings.end_to_end_ms))
        block_times.append(time.perf_counter() - t0)
    return out, iters, statistics.median(block_times)


def median_interval(values, level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median: the j-th smallest and j-th largest of n values, with j
    the largest whose binomial tail leaves at least `level` between them."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n < MIN_BLOCKS:
        raise ValueError(f"an interval of the median at 95% needs at least {MIN_BLOCKS} values, got {n}")
    tail, j = 0.0, 0
    while True:
        nxt = tail + math.comb(n, j) / 2 ** n  # P(Binomial(n, 1/2) <= j)
        if 2 * nxt > 1 - level:
            break
        tail, j = nxt, j + 1
    return float(x[j - 1]), float(x[n - j])


def ratios(samples: Mapping[str, list[float]], reference: str) -> dict[str, dict]:
    """Per artifact, over blocks, its time over `reference`'s in the same block."""
    ref = np.asarray(samples[reference], dtype=float)
    if len(ref) == 0 or not np.all(np.isfinite(ref)) or np.any(ref <= 0):
        raise ValueError(f"the reference {reference!r} has no usable block times")
    out = {}
    for name, values in samples.items():
        values = np.asarray(values, dtype=float)
        if len(values) != len(ref) or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"{name!r} has {len(values)} block times, not all usable, for the reference's {len(ref)}")
        r = values / ref
        out[name] = {"median_ms": float(np.median(values)), "ratio_median": float(np.median(r)),
                     "ratio_ci95": list(median_interval(r)),
                     "ratio_p05": float(np.percentile(r, 5)), "ratio_p95": float(np.percentile(r, 95))}
    return out


def verdict(row: Mapping) -> str:
    """'faster', 'slower' or 'level' than the reference, from the 95% interval of the median ratio."""
    lo, hi = row["ratio_ci95"]
    return "faster" if hi < 1 else "slower" if lo > 1 else "level"
