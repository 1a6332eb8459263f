"""Magnitude pruning of single weights and the relative-offset format with filler zeros."""

import numpy as np
import pytest

from compress.sharing.sparse import decode_positions, encode_positions, magnitude_mask


def test_mask_removes_exactly_the_smallest_fraction():
    w = np.array([[0.5, -0.1, 0.05], [2.0, -0.3, 0.0]], dtype=np.float32)
    keep = magnitude_mask(w, 0.5)
    assert keep.shape == w.shape
    assert sorted(np.abs(w[~keep]).tolist()) == pytest.approx([0.0, 0.05, 0.1])


def test_mask_ties_go_by_position():
    keep = magnitude_mask(np.ones(10, dtype=np.float32), 0.3)
    assert keep.tolist() == [False] * 3 + [True] * 7


def test_mask_rejects_bad_fraction():
    with pytest.raises(ValueError):
        magnitude_mask(np.ones(4), 1.0)


def test_offsets_round_trip_with_gaps_longer_than_the_cap():
    positions = np.array([0, 3, 4, 300, 301, 1000, 1016])
    offsets, filler = encode_positions(positions, offset_bits=3)  # cap 7: a gap of 8+ zeros needs fillers
    assert offsets.max() <= 7
    decoded = decode_positions(offsets)
    assert decoded[~filler].tolist() == positions.tolist()
    # Each filler stands for cap zeros plus one explicit zero (8 positions); the gap 304 -> 295 zeros.
    gaps = np.diff(positions, prepend=-1) - 1
    assert int(filler.sum()) == int((gaps // 8).sum())
    assert not set(decoded[filler].tolist()) & set(positions.tolist())


def test_offsets_exact_multiple_of_cap_boundaries():
    for gap in (6, 7, 8, 15, 16, 17):
        positions = np.array([gap])
        offsets, filler = encode_positions(positions, offset_bits=3)
        assert decode_positions(offsets)[~filler].tolist() == [gap]
        assert offsets.max() <= 7


def test_offsets_random_round_trip():
    rng = np.random.default_rng(0)
    positions = np.flatnonzero(rng.random(20_000) < 0.02)
    for bits in (2, 5, 8):
        offsets, filler = encode_positions(positions, bits)
        assert decode_positions(offsets)[~filler].tolist() == positions.tolist()


def test_offsets_refuse_unsorted_positions():
    with pytest.raises(ValueError):
        encode_positions(np.array([3, 3]), 4)
    with pytest.raises(ValueError):
        encode_positions(np.array([1]), 0)
