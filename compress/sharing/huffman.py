"""Canonical Huffman codes with vectorised encoding and decoding.

A code is described by its code lengths alone (canonical form), so a file stores one byte per symbol.
Lengths are limited to MAX_LEN bits, which bounds the decoding table at 2**MAX_LEN entries.

Decoding a variable-length code is sequential within a stream; to keep it fast in numpy, every
stream is cut into chunks of CHUNK symbols whose starting bit is recorded, and all chunks of all
streams are decoded in lockstep, one symbol per chunk per step.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np

from compress.limits import check_allocation

MAX_LEN = 16
CHUNK = 4096


@dataclass
class HuffmanStream:
    data: bytes               # the bits, most significant first, zero-padded to a whole byte
    nbits: int
    count: int                # number of symbols
    lengths: np.ndarray       # uint8 code length per symbol of the alphabet (0: symbol absent)
    chunk_starts: np.ndarray  # uint32 bit offset of every CHUNK-th symbol


def code_lengths(freqs, max_len: int = MAX_LEN) -> np.ndarray:
    """Optimal (Huffman) code lengths for symbol frequencies, limited to `max_len` bits.

    Symbols of frequency 0 get length 0 (no code). A lone symbol gets a 1-bit code. When the optimal
    code is longer than `max_len`, frequencies are halved (rounding up) until it fits: slightly
    suboptimal, and it only happens for extremely skewed distributions.
    """
    f = np.asarray(freqs, dtype=np.int64).ravel()
    if (f < 0).any():
        raise ValueError("frequencies must be non-negative")
    if f.size > (1 << max_len):
        raise ValueError(f"an alphabet of {f.size} symbols cannot have codes of at most {max_len} bits")
    while True:
        lengths = _unlimited_lengths(f)
        if lengths.max(initial=0) <= max_len:
            return lengths.astype(np.uint8)
        f = np.where(f > 0, (f + 1) // 2, 0)


def _unlimited_lengths(f: np.ndarray) -> np.ndarray:
    lengths = np.zeros(f.size, dtype=np.int64)
    present = np.flatnonzero(f)
    if present.size == 1:
        lengths[present] = 1
    if present.size <= 1:
        return lengths
    tie = itertools.count()  # equal weights merge in insertion order: deterministic codes
    heap = [(int(f[s]), next(tie), [int(s)]) for s in present]
    heapq.heapify(heap)
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        merged = a + b
        lengths[merged] += 1  # every symbol under the new node moves one level deeper
        heapq.heappush(heap, (w1 + w2, next(tie), merged))
    return lengths


def check_lengths(lengths: np.ndarray, max_len: int = MAX_LEN) -> None:
    """Raise ValueError unless the lengths describe a prefix code (Kraft sum at most 1)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths < 0).any() or lengths.max(initial=0) > max_len:
        raise ValueError(f"code lengths must lie in [0, {max_len}]")
    used = lengths[lengths > 0]
    if int(np.sum(np.left_shift(1, max_len - used))) > (1 << max_len):
        raise ValueError("code lengths violate the Kraft inequality")


def canonical_codes(lengths) -> np.ndarray:
    """Canonical code values (int64, read with their length) for each symbol: shorter codes first,
    ties by symbol number, each code the previous plus one shifted to the new length."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.int64)
    order = np.lexsort((np.arange(lengths.size), lengths))
    code, prev_len = 0, 0
    for s in order:
        ln = int(lengths[s])
        if ln == 0:
            continue
        code <<= ln - prev_len
        codes[s] = code
        code += 1
        prev_len = ln
    return codes


def encode(symbols, lengths, chunk: int = CHUNK) -> HuffmanStream:
    """Pack `symbols` with the canonical code of `lengths` into a bit string."""
    lengths = np.asarray(lengths, dtype=np.uint8)
    check_lengths(lengths)
    sym = np.asarray(symbols, dtype=np.int64).ravel()
    if sym.size and (sym.min() < 0 or sym.max() >= lengths.size):
        raise ValueError(f"symbols must lie in [0, {lengths.size})")
    ln = lengths[sym].astype(np.int64)
    if (ln == 0).any():
        raise ValueError("a symbol to encode has no code (its frequency was counted as 0)")
    code = canonical_codes(lengths)[sym]
    ends = np.cumsum(ln)
    starts = ends - ln
    nbits = int(ends[-1]) if sym.size else 0
    if nbits >= 1 << 32:
        raise ValueError("a stream longer than 2**32 bits is not supported")
    bits = np.zeros(nbits, dtype=np.uint8)
    # Bit j of every code at once: one vector operation per bit position instead of one per symbol.
    for j in range(int(ln.max(initial=0))):
        m = ln > j
        bits[starts[m] + j] = (code[m] >> (ln[m] - 1 - j)) & 1
    return HuffmanStream(np.packbits(bits).tobytes(), nbits, int(sym.size), lengths,
                         starts[::chunk].astype(np.uint32))


def encode_auto(symbols, alphabet: int, chunk: int = CHUNK) -> HuffmanStream:
    """Encode with the optimal code for the symbols' own frequencies."""
    sym = np.asarray(symbols, dtype=np.int64).ravel()
    if sym.size and (sym.min() < 0 or sym.max() >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet})")
    return encode(sym, code_lengths(np.bincount(sym, minlength=alphabet)), chunk)


def decode_streams(streams: list[HuffmanStream], chunk: int = CHUNK) -> list[np.ndarray]:
    """Decode several streams together; returns one int64 array per stream.

    Raises ValueError when a stream is inconsistent (its chunks do not end where the next begins).
    """
    if not streams:
        return []
    table_bits = 1
    for st in streams:
        check_lengths(st.lengths)
        table_bits = max(table_bits, int(np.asarray(st.lengths).max(initial=0)))
    size = 1 << table_bits
    # One symbol (int32) and one length (int64) table row per stream, as wide as the longest code of any.
    check_allocation(3 * len(streams) * size, "int32", f"Huffman decode tables ({len(streams)} × 2^{table_bits})")
    check_allocation(sum(len(st.data) for st in streams), "int64", "Huffman bit streams")
    sym_table = np.zeros((len(streams), size), dtype=np.int32)
    len_table = np.zeros((len(streams), size), dtype=np.int64)
    for t, st in enumerate(streams):
        lengths = np.asarray(st.lengths, dtype=np.int64)
        codes = canonical_codes(lengths)
        for s in np.flatnonzero(lengths):
            lo = int(codes[s]) << (table_bits - int(lengths[s]))
            hi = (int(codes[s]) + 1) << (table_bits - int(lengths[s]))
            sym_table[t, lo:hi] = s
            len_table[t, lo:hi] = lengths[s]

    buffers, starts, counts, tables, expected_ends = [], [], [], [], []
    base = 0
    for t, st in enumerate(streams):
        n_chunks = -(-st.count // chunk)
        cs = np.asarray(st.chunk_starts, dtype=np.int64)
        if cs.size != n_chunks or len(st.data) * 8 < st.nbits or len(st.data) > (st.nbits + 7) // 8:
            raise ValueError("Huffman stream header does not match its data")
        if n_chunks and (cs[0] != 0 or (np.diff(cs) < 0).any() or cs[-1] > st.nbits):
            raise ValueError("Huffman chunk offsets are not increasing")
        buffers.append(st.data)
        starts.append(base * 8 + cs)
        counts.append(np.minimum(chunk, st.count - chunk * np.arange(n_chunks)))
        tables.append(np.full(n_chunks, t))
        expected_ends.append(base * 8 + np.append(cs[1:], st.nbits)[:n_chunks])
        base += len(st.data)
    buf = np.frombuffer(b"".join(buffers) + b"\0\0\0", dtype=np.uint8).astype(np.int64)
    start = np.concatenate(starts)
    count = np.concatenate(counts).astype(np.int64)
    table = np.concatenate(tables)
    expected = np.concatenate(expected_ends)
    order = np.argsort(-count, kind="stable")  # longest chunks first: active chunks form a prefix
    pos, count_sorted, table_sorted = start[order].copy(), count[order], table[order]
    out = np.zeros((order.size, chunk), dtype=np.int32)
    active_at = np.searchsorted(-count_sorted, -np.arange(chunk), side="left")  # chunks with count > i
    max_byte = buf.size - 3
    mask = size - 1
    for i in range(int(count_sorted.max(initial=0))):
        a = int(active_at[i])
        p = pos[:a]
        byte = np.minimum(p >> 3, max_byte)
        window = (buf[byte] << 16) | (buf[byte + 1] << 8) | buf[byte + 2]
        window = (window >> (24 - table_bits - (p & 7))) & mask
        tid = table_sorted[:a]
        out[:a, i] = sym_table[tid, window]
        step = len_table[tid, window]
        if not step.all():  # bits that start no code: an incomplete code, or lengths that are all 0
            raise ValueError("Huffman data is corrupt: its bits hold a code its code lengths do not define")
        pos[:a] += step
    if not np.array_equal(pos, expected[order]):
        raise ValueError("Huffman data is corrupt: decoded chunks do not end where they should")
    rows = np.empty_like(order)
    rows[order] = np.arange(order.size)
    results, first = [], 0
    for st in streams:
        n_chunks = -(-st.count // chunk)
        results.append(out[rows[first:first + n_chunks]].ravel()[:st.count].astype(np.int64))
        first += n_chunks
    return results
