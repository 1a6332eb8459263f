"""Canonical Huffman coding: optimal lengths, prefix codes, vectorised round trips over chunks."""

import itertools

import numpy as np
import pytest

from compress.sharing import huffman as H


def test_dyadic_probabilities_give_minus_log2_p():
    freqs = np.array([64, 32, 16, 8, 4, 2, 1, 1])
    p = freqs / freqs.sum()
    assert H.code_lengths(freqs).tolist() == (-np.log2(p)).astype(int).tolist()


def brute_force_optimum(freqs, max_len):
    """Smallest sum f*l over all length vectors obeying Kraft's inequality (independent of Huffman)."""
    best = None
    for lengths in itertools.product(range(1, max_len + 1), repeat=len(freqs)):
        if sum(2.0 ** -l for l in lengths) <= 1.0:
            cost = sum(f * l for f, l in zip(freqs, lengths))
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_total_length_matches_the_optimum(seed):
    freqs = np.random.default_rng(seed).integers(1, 50, size=5)
    lengths = H.code_lengths(freqs)
    assert int((freqs * lengths).sum()) == brute_force_optimum(freqs.tolist(), 4)


def test_absent_and_lone_symbols():
    assert H.code_lengths([0, 7, 0]).tolist() == [0, 1, 0]
    assert H.code_lengths([0, 0]).tolist() == [0, 0]


def test_canonical_codes_are_prefix_free():
    lengths = H.code_lengths([5, 9, 12, 13, 16, 45, 1, 0, 3])
    codes = H.canonical_codes(lengths)
    words = [format(int(c), f"0{l}b") for c, l in zip(codes, lengths) if l]
    assert len(set(words)) == len(words)
    assert not any(a != b and b.startswith(a) for a in words for b in words)


def test_length_limit_keeps_a_valid_code():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    assert H._unlimited_lengths(np.array(fib)).max() > H.MAX_LEN
    lengths = H.code_lengths(fib)
    assert lengths.max() <= H.MAX_LEN
    H.check_lengths(lengths)
    sym = np.repeat(np.arange(30), 3)
    assert np.array_equal(H.decode_streams([H.encode(sym, lengths)])[0], sym)


def test_round_trip_several_streams_across_chunks():
    rng = np.random.default_rng(0)
    big = rng.choice(256, size=3 * H.CHUNK + 17, p=np.r_[[0.5], np.full(255, 0.5 / 255)])
    small = rng.integers(0, 3, size=40)
    streams = [H.encode_auto(big, 257), H.encode_auto(small, 3), H.encode_auto(np.array([], int), 4),
               H.encode_auto(np.full(9000, 2), 5)]
    assert streams[0].chunk_starts.size == 4
    out = H.decode_streams(streams)
    for st, ref in zip(out, [big, small, np.array([], int), np.full(9000, 2)]):
        assert np.array_equal(st, ref)
    # The skewed stream costs well under 8 bits per symbol.
    assert streams[0].nbits / big.size < 5.5


def test_encode_refuses_symbols_without_code():
    with pytest.raises(ValueError):
        H.encode(np.array([0, 2]), np.array([1, 1, 0], np.uint8))


def test_inconsistent_stream_is_detected():
    st = H.encode_auto(np.arange(100) % 7, 7)
    broken = H.HuffmanStream(st.data, st.nbits - 3, st.count, st.lengths, st.chunk_starts)
    with pytest.raises(ValueError):
        H.decode_streams([broken])
    bad_kraft = H.HuffmanStream(st.data, st.nbits, st.count, np.ones(7, np.uint8), st.chunk_starts)
    with pytest.raises(ValueError):
        H.decode_streams([bad_kraft])
