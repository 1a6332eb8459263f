"""Latency statistics: the distribution of per-iteration times, its spread, and the noise warning."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# Above this coefficient of variation a latency figure is flagged as noisy.
CV_WARN = 0.05


def summarize(samples_ms: Iterable[float]) -> dict:
    """mean, std (sample, ddof=1), min, p50/p90/p95/p99 (linear interpolation), max, all in ms; n and cv."""
    x = np.asarray(list(samples_ms), dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latency samples to summarize")
    if not np.all(np.isfinite(x)):
        raise ValueError("latency samples contain NaN or infinity")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    out = {"n": int(x.size), "mean_ms": mean, "std_ms": std, "min_ms": float(x.min())}
    for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES)):
        out[f"p{q}_ms"] = float(v)
    out["max_ms"] = float(x.max())
    out["cv"] = std / mean if mean > 0 else math.inf
    return out


def throughput(batch: int, stats: dict) -> float:
    """Images per second at this batch size: batch / mean latency."""
    return batch * 1000.0 / stats["mean_ms"] if stats["mean_ms"] > 0 else math.inf


def noise_warning(stats: dict, what: str, limit: float = CV_WARN) -> str | None:
    """A sentence when the spread is too large to trust the figure, else None."""
    if stats["cv"] > limit:
        return (f"{what}: coefficient of variation {stats['cv']:.1%} exceeds {limit:.0%} "
                f"(std {stats['std_ms']:.3f} ms on mean {stats['mean_ms']:.3f} ms); the machine was busy "
                "or clocks changed: close other work, lock clocks, or raise --iters/--duration")
    return None
