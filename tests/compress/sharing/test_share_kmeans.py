"""1-D k-means for weight sharing: linear initialisation, Lloyd fixed point, at most k values."""

import numpy as np
import pytest

from compress.sharing.kmeans import kmeans_1d, linear_init


def naive_lloyd(values, k, iters=200):
    """Reference: textbook Lloyd iterations with an n×k distance matrix, same init and empty-cluster rule."""
    c = np.linspace(values.min(), values.max(), k)
    for _ in range(iters):
        labels = np.abs(values[:, None] - c[None, :]).argmin(1)
        new = np.array([values[labels == j].mean() if (labels == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c, rtol=0, atol=0):
            break
        c = np.sort(new)
    return c


def test_linear_init_spans_min_to_max():
    c = linear_init(np.array([-2.0, 0.5, 6.0]), 5)
    assert c.tolist() == [-2.0, 0.0, 2.0, 4.0, 6.0]


def test_matches_textbook_lloyd():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(-1, 0.2, 300), rng.normal(0.3, 0.1, 500), rng.laplace(0, 0.05, 400)])
    centroids, labels = kmeans_1d(values, 8)
    np.testing.assert_allclose(centroids, naive_lloyd(values, 8), rtol=1e-5, atol=1e-6)
    # Every value sits with its nearest centroid.
    dist = np.abs(values[:, None] - centroids[None, :].astype(np.float64))
    assert np.allclose(dist[np.arange(values.size), labels], dist.min(1), atol=1e-6)


def test_separated_groups_are_recovered_exactly():
    values = np.repeat([-3.0, 0.0, 5.0], [10, 20, 30])
    centroids, labels = kmeans_1d(values, 3)
    assert centroids.tolist() == [-3.0, 0.0, 5.0]
    assert np.array_equal(centroids[labels], values.astype(np.float32))


def test_at_most_k_values_and_codebook_always_k():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(10_000).astype(np.float32)
    centroids, labels = kmeans_1d(values, 16)
    assert centroids.shape == (16,) and centroids.dtype == np.float32
    assert np.unique(centroids[labels]).size <= 16
    # Fewer distinct values than clusters: empty clusters keep their place, codebook stays size k.
    c2, l2 = kmeans_1d(np.array([1.0, 1.0, 2.0]), 8)
    assert c2.size == 8 and set(c2[l2].tolist()) == {1.0, 2.0}


def test_deterministic():
    values = np.random.default_rng(3).standard_normal(5000)
    a, la = kmeans_1d(values, 32)
    b, lb = kmeans_1d(values, 32)
    assert np.array_equal(a, b) and np.array_equal(la, lb)


@pytest.mark.parametrize("values,k", [([], 4), ([1.0, np.nan], 2), ([1.0], 0), ([1.0], 2.5)])
def test_bad_input_is_refused(values, k):
    with pytest.raises(ValueError):
        kmeans_1d(np.array(values), k)
