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


# --- exact behaviour at the edges (each of these once let a deliberate bug through) --------------------------

def test_length_limited_code_is_exactly_the_halved_huffman_code():
    """Unlimited lengths of 1 1 2 3 5 8 13 reach 6 bits; with 4 allowed, the frequencies are halved
    (rounding up) once to 1 1 1 2 3 4 7, whose Huffman code is 4 4 3 3 3 2 2 (worked by hand)."""
    assert H._unlimited_lengths(np.array([1, 1, 2, 3, 5, 8, 13])).tolist() == [6, 6, 5, 4, 3, 2, 1]
    assert H.code_lengths([1, 1, 2, 3, 5, 8, 13], max_len=4).tolist() == [4, 4, 3, 3, 3, 2, 2]
    # A code whose longest length equals the limit is kept as it is (no needless halving).
    assert H.code_lengths([1, 1, 2, 4], max_len=3).tolist() == [3, 3, 2, 1]
    # Absent symbols stay absent through the halving.
    assert H.code_lengths([1, 1, 0, 2, 3, 5, 8, 13], max_len=4).tolist() == [4, 4, 0, 3, 3, 3, 2, 2]
    assert H.code_lengths([3, 0, 5]).tolist() == [1, 0, 1]


def test_alphabet_and_frequency_limits():
    assert H.code_lengths([1, 1, 1, 1], max_len=2).tolist() == [2, 2, 2, 2]  # 2**max_len symbols fit
    with pytest.raises(ValueError, match="^an alphabet of 5 symbols cannot have codes of at most 2 bits$"):
        H.code_lengths([1] * 5, max_len=2)
    with pytest.raises(ValueError, match="^frequencies must be non-negative$"):
        H.code_lengths([1, -1])
    assert H.code_lengths(np.array([2.0, 1.0])).dtype == np.uint8


def test_check_lengths_edges():
    H.check_lengths(np.array([1, 1]))                     # a complete code
    H.check_lengths(np.array([16, 16, 1, 0]))             # the longest allowed length
    with pytest.raises(ValueError, match=r"^code lengths must lie in \[0, 16\]$"):
        H.check_lengths(np.array([17, 1]))
    with pytest.raises(ValueError, match=r"^code lengths must lie in \[0, 16\]$"):
        H.check_lengths(np.array([-1, 1]))
    with pytest.raises(ValueError, match="^code lengths violate the Kraft inequality$"):
        H.check_lengths(np.array([1, 1, 1]))
    with pytest.raises(ValueError, match="Kraft"):
        H.check_lengths(np.array([1, 2, 2, 2]))


def test_encode_edges():
    lengths = np.array([1, 2, 2], np.uint8)
    st = H.encode([], lengths)
    assert (st.data, st.nbits, st.count, st.chunk_starts.size) == (b"", 0, 0, 0)
    st = H.encode([2, 0, 1, 2], lengths, chunk=2)
    assert st.data == bytes([0b11010110]) and st.nbits == 7
    assert st.chunk_starts.dtype == np.uint32 and st.chunk_starts.tolist() == [0, 3]
    for bad in ([3], [-1], [0, -2]):
        with pytest.raises(ValueError, match=r"^symbols must lie in \[0, 3\)$"):
            H.encode(bad, lengths)
    with pytest.raises(ValueError, match=r"^a symbol to encode has no code \(its frequency was counted as 0\)$"):
        H.encode([1], np.array([1, 0, 1], np.uint8))


def test_encode_auto_edges():
    st = H.encode_auto([0, 0, 1], 4, chunk=2)
    assert st.lengths.tolist() == [1, 1, 0, 0] and st.chunk_starts.tolist() == [0, 2]
    for bad in ([4], [-1]):
        with pytest.raises(ValueError, match=r"^symbols must lie in \[0, 4\)$"):
            H.encode_auto(bad, 4)


def _stream(**over):
    st = H.encode([2, 0, 1, 2, 2, 0], np.array([1, 2, 2], np.uint8), chunk=2)
    fields = {"data": st.data, "nbits": st.nbits, "count": st.count, "lengths": st.lengths,
              "chunk_starts": st.chunk_starts, **over}
    return H.HuffmanStream(**fields)


def test_decode_checks_every_header_field():
    assert H.decode_streams([_stream()], chunk=2)[0].tolist() == [2, 0, 1, 2, 2, 0]
    header = "^Huffman stream header does not match its data$"
    with pytest.raises(ValueError, match=header):  # one chunk start missing
        H.decode_streams([_stream(chunk_starts=np.array([0, 3], np.uint32))], chunk=2)
    with pytest.raises(ValueError, match=header):  # fewer bits than declared
        H.decode_streams([_stream(nbits=17)], chunk=2)
    with pytest.raises(ValueError, match=header):  # a byte more than the bits need
        H.decode_streams([_stream(data=_stream().data + b"\0")], chunk=2)
    offsets = "^Huffman chunk offsets are not increasing$"
    good = _stream().chunk_starts.tolist()
    for starts in ([1, good[1], good[2]], [0, good[2], good[1]], [0, good[1], 100]):
        with pytest.raises(ValueError, match=offsets):
            H.decode_streams([_stream(chunk_starts=np.array(starts, np.uint32))], chunk=2)
    with pytest.raises(ValueError, match="^Huffman data is corrupt: decoded chunks do not end where they should$"):
        H.decode_streams([_stream(nbits=_stream().nbits - 1)], chunk=2)


def test_decode_chunks_of_unequal_length_across_streams():
    """Chunks of 3, 3, 1 and 3, 2 symbols from two streams, decoded in lockstep."""
    a = np.array([0, 1, 1, 1, 0, 1, 1], np.int64)
    b = np.array([3, 2, 1, 0, 3], np.int64)
    sa, sb = H.encode_auto(a, 2, chunk=3), H.encode_auto(b, 4, chunk=3)
    assert (sa.chunk_starts.size, sb.chunk_starts.size) == (3, 2)
    out = H.decode_streams([sb, sa], chunk=3)
    assert [o.tolist() for o in out] == [b.tolist(), a.tolist()] and out[0].dtype == np.int64


def test_bits_that_start_no_code_are_refused():
    """All-zero code lengths once decoded any count of symbol 0 from no bits; an incomplete code (Kraft sum
    under 1) let bits that start no code through whenever the chunk ends happened to match."""
    corrupt = "^Huffman data is corrupt: its bits hold a code its code lengths do not define$"
    nothing = H.HuffmanStream(b"", 0, 5, np.zeros(4, np.uint8), np.zeros(1, np.uint32))
    with pytest.raises(ValueError, match=corrupt):
        H.decode_streams([nothing])
    # lengths 1 and 2 for symbols 0 and 1: "0" and "10" are codes, "11" is not.
    incomplete = H.HuffmanStream(bytes([0b11000000]), 2, 1, np.array([1, 2], np.uint8), np.zeros(1, np.uint32))
    with pytest.raises(ValueError, match=corrupt):
        H.decode_streams([incomplete])
    fine = H.HuffmanStream(bytes([0b10000000]), 2, 1, np.array([1, 2], np.uint8), np.zeros(1, np.uint32))
    assert H.decode_streams([fine])[0].tolist() == [1]
