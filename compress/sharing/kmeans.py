"""One-dimensional k-means with linear initialisation, as Deep Compression uses for weight sharing.

In one dimension every cluster is an interval of the sorted values, so an iteration needs only the
k-1 boundaries between neighbouring centroids: cluster sums come from a prefix sum of the sorted
values, which makes each iteration O(k log n) however many weights a layer has.
"""

from __future__ import annotations

import numpy as np


def linear_init(values: np.ndarray, k: int) -> np.ndarray:
    """k centroids spaced evenly over [min, max]: the initialisation Han et al. found best, because it
    keeps centroids for the rare large weights that density-based initialisations lose."""
    return np.linspace(float(values.min()), float(values.max()), k, dtype=np.float64)


def kmeans_1d(values, k: int, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Cluster `values` into at most `k` groups.

    Returns (centroids float32 [k], sorted ascending, and labels int64 [n] indexing them). A cluster
    that ends up empty keeps its centroid, so the codebook always has exactly k entries.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ValueError("cannot cluster an empty set of weights")
    if not np.isfinite(flat).all():
        raise ValueError("weights contain NaN or infinity")
    sorted_vals = np.sort(flat)
    prefix = np.concatenate(([0.0], np.cumsum(sorted_vals)))
    centroids = linear_init(sorted_vals, int(k))
    ends = None
    for _ in range(iters):
        bounds = (centroids[1:] + centroids[:-1]) / 2
        # Cluster j holds sorted values in [ends[j-1], ends[j]): values equal to a boundary go left,
        # matching the final labelling below.
        new_ends = np.concatenate((np.searchsorted(sorted_vals, bounds, side="right"), [flat.size]))
        if ends is not None and np.array_equal(new_ends, ends):
            break
        ends = new_ends
        starts = np.concatenate(([0], ends[:-1]))
        counts = ends - starts
        sums = prefix[ends] - prefix[starts]
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        # Lloyd steps keep 1-D centroids ordered, except that an empty cluster stays put; re-sorting
        # keeps the boundary computation valid in that case too.
        centroids = np.sort(centroids)
    centroids32 = centroids.astype(np.float32)
    bounds = (centroids[1:] + centroids[:-1]) / 2
    labels = np.searchsorted(bounds, flat, side="left").astype(np.int64)
    return centroids32, labels
