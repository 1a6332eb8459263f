"""The .dcz container: bit-exact round trip, and damage caught by its checksum with a one-line error."""

import numpy as np
import pytest
import torch

from compress.sharing.container import (ContainerError, SharedTensor, decode_container, encode_container,
                                        read_container, write_container)


def tensors():
    rng = np.random.default_rng(0)
    dense_cb = np.sort(rng.standard_normal(16)).astype(np.float32)
    dense = SharedTensor("conv.weight", (8, 3, 3, 3), dense_cb, rng.integers(0, 16, 8 * 27), bits=4)
    sparse_idx = np.where(rng.random(5000) < 0.1, rng.integers(0, 32, 5000), -1)
    sparse_idx[:400] = -1  # a gap far beyond the 5-bit offset cap
    sparse = SharedTensor("fc.weight", (10, 500), rng.standard_normal(32).astype(np.float32), sparse_idx,
                          bits=5, offset_bits=5)
    raw = {"bn.weight": torch.randn(8), "bn.running_var": torch.rand(8), "bn.num_batches_tracked": torch.tensor(7)}
    return [dense, sparse], raw


def test_round_trip_is_bit_exact():
    shared, raw = tensors()
    blob, sizes = encode_container({"arch": "x", "note": "ü"}, shared, raw)
    meta, back, raw_back = decode_container(blob)
    assert meta == {"arch": "x", "note": "ü"}
    for a, b in zip(shared, back):
        assert (a.name, a.shape, a.bits, a.offset_bits) == (b.name, b.shape, b.bits, b.offset_bits)
        assert np.array_equal(a.index, b.index)
        assert a.values().tobytes() == b.values().tobytes()
    assert set(raw_back) == set(raw)
    for k in raw:
        assert raw_back[k].dtype == raw[k].dtype and torch.equal(raw_back[k], raw[k])
    assert sizes["offset_bits"] > 0 and sizes["index_bits"] > 0


def test_file_round_trip(tmp_path):
    shared, raw = tensors()
    sizes = write_container(tmp_path / "m.dcz", {"a": 1}, shared, raw)
    assert sizes["file"] == (tmp_path / "m.dcz").stat().st_size
    _, back, _ = read_container(tmp_path / "m.dcz")
    assert back[1].values().tobytes() == shared[1].values().tobytes()


@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_flipped_byte_is_rejected(where):
    shared, raw = tensors()
    blob = bytearray(encode_container({}, shared, raw)[0])
    blob[int(where * len(blob))] ^= 0x20
    with pytest.raises(ContainerError, match="checksum") as info:
        decode_container(bytes(blob), "m.dcz")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [0, 3, 20, -1, -40])
def test_truncated_file_is_rejected(keep):
    shared, raw = tensors()
    blob = encode_container({}, shared, raw)[0]
    with pytest.raises(ContainerError, match="truncated") as info:
        decode_container(blob[:keep], "m.dcz")
    assert "m.dcz" in str(info.value) and "\n" not in str(info.value)


def test_other_files_are_not_containers(tmp_path):
    with pytest.raises(ContainerError, match="not a .dcz"):
        decode_container(b"PK\x03\x04" + bytes(100))
    with pytest.raises(FileNotFoundError):
        read_container(tmp_path / "missing.dcz")


# --- the bit format itself: fixed references, not just round trips ---------------------------------------

# sha256 of reference_container() below, computed once with the format as documented in
# compress/sharing/container.py. A change of the layout, the Huffman code assignment, the sparse offsets
# or the header's serialization changes it: bump VERSION and this constant together, on purpose.
REFERENCE_SHA256 = "af6f2931fe5d3bb22eec4a086674df0bee6096ce56dbb8e0dbfcc810e7ccece0"


def reference_container() -> bytes:
    """A tiny, fully deterministic container: a dense 2-bit tensor, a sparse 3-bit one with 2-bit offsets
    (a gap long enough to need a filler), and one raw tensor."""
    dense_index = np.array([0, 1, 2, 3, 3, 3, 3, 2, 0, 3, 3, 1], dtype=np.int64)
    dense = SharedTensor("conv.weight", (3, 4), np.array([-1.5, -0.25, 0.5, 2.0], np.float32), dense_index, bits=2)
    sparse_index = np.full(20, -1, dtype=np.int64)
    sparse_index[[0, 1, 9, 19]] = [4, 0, 7, 4]
    sparse = SharedTensor("fc.weight", (4, 5), np.arange(8, dtype=np.float32) / 4 - 1, sparse_index, bits=3,
                          offset_bits=2)
    raw = {"bn.bias": torch.tensor([0.125, -0.5], dtype=torch.float32)}
    return encode_container({"arch": "ref", "classes": ["a", "b"]}, [dense, sparse], raw)[0]


def test_the_encoder_writes_the_reference_bytes():
    import hashlib

    assert hashlib.sha256(reference_container()).hexdigest() == REFERENCE_SHA256


def hand_built(header: dict, payload: bytes) -> bytes:
    """Bytes assembled by hand from the documented layout, independent of the encoder."""
    import hashlib
    import json
    import struct

    head = json.dumps(header, separators=(",", ":")).encode()
    body = b"DCZ\x89" + struct.pack("<HHI", 1, 0, len(head)) + head + payload
    return body + hashlib.sha256(body).digest()


def test_decoding_hand_built_bytes():
    """Codebook [-1, 0.5, 2] with code lengths [1, 2, 2]: canonical codes 0, 10, 11. The symbols
    2 0 1 2 are the bits 11 0 10 11 = 1101011, packed MSB first into 0xD6 (one zero bit of padding)."""
    import struct

    codebook = struct.pack("<3f", -1.0, 0.5, 2.0)
    lengths = bytes([1, 2, 2])
    chunks = struct.pack("<I", 0)
    bits = bytes([0b11010110])
    payload = codebook + lengths + chunks + bits
    header = {"format": "compress.dcz/1", "chunk": 4096, "model": {"arch": "hand"},
              "shared": [{"name": "w", "shape": [2, 2], "bits": 2, "k": 3, "offset_bits": None,
                          "codebook": [0, 12],
                          "index": {"count": 4, "nbits": 7, "lengths": [12, 3], "chunks": [15, 4], "bits": [19, 1]}}],
              "raw": [20, 0]}
    meta, shared, raw = decode_container(hand_built(header, payload), "hand.dcz")
    assert meta == {"arch": "hand"} and raw == {}
    assert shared[0].index.tolist() == [2, 0, 1, 2]
    assert shared[0].values().tolist() == [[2.0, -1.0], [0.5, 2.0]]
    # One bit more or less than the stream holds is caught.
    header["shared"][0]["index"]["nbits"] = 6
    with pytest.raises(ContainerError):
        decode_container(hand_built(header, payload), "hand.dcz")


def test_sparse_positions_and_fillers_in_the_reference():
    """Positions 0, 1, 9, 19 with 2-bit offsets (cap 3): the gaps 7 and 9 need fillers."""
    _, shared, raw = decode_container(reference_container())
    sparse = shared[1]
    assert np.flatnonzero(sparse.index >= 0).tolist() == [0, 1, 9, 19]
    assert sparse.index[[0, 1, 9, 19]].tolist() == [4, 0, 7, 4]
    assert sparse.values().ravel()[[0, 1, 9, 19]].tolist() == [0.0, -1.0, 0.75, 0.0]
    assert torch.equal(raw["bn.bias"], torch.tensor([0.125, -0.5]))


# --- crafted files: what a small file may make the decoder allocate -----------------------------------------

def _one_symbol_entry(i: int, base: int, **index) -> dict:
    """A one-weight tensor whose codebook, lengths, chunk index and bits sit at base.. in the payload."""
    stream = {"count": 1, "nbits": 1, "lengths": [base + 4, 1], "chunks": [base + 5, 4], "bits": [base + 9, 1]}
    return {"name": f"w{i}", "shape": [1], "bits": 1, "k": 1, "offset_bits": None, "codebook": [base, 4],
            "index": {**stream, **index}}


def _one_symbol_payload() -> bytes:
    import struct

    return struct.pack("<f", 0.5) + bytes([1]) + struct.pack("<I", 0) + b"\0"


def test_pieces_that_share_payload_bytes_are_refused():
    """Thirty streams pointing at one 1 MiB bits blob made the decoder copy and widen it thirty times
    (+300 MiB from a 1 MiB file) before its consistency check; the writer never lays pieces over each other."""
    mib = 1 << 20
    payload = _one_symbol_payload()[:9] + bytes(mib)
    entries = [_one_symbol_entry(0, 0, nbits=8 * mib, bits=[9, mib])]
    entries += [{**_one_symbol_entry(i, 0, nbits=8 * mib, bits=[9, mib]), "name": f"w{i}"} for i in range(1, 30)]
    header = {"format": "compress.dcz/1", "chunk": 4096, "model": {}, "shared": entries, "raw": [0, 0]}
    with pytest.raises(ContainerError, match="tensor w1 codebook overlaps tensor w0 codebook"):
        decode_container(hand_built(header, payload), "crafted.dcz")
    # The same tensors laid side by side are a valid file.
    side = b"".join(_one_symbol_payload() for _ in range(3))
    header["shared"] = [_one_symbol_entry(i, 10 * i) for i in range(3)]
    _, shared, _ = decode_container(hand_built(header, side), "side.dcz")
    assert [t.values().item() for t in shared] == [0.5, 0.5, 0.5]


def test_the_weights_of_all_tensors_are_bounded_together(monkeypatch):
    """Each empty sparse tensor of 8M weights passed the memory bound alone; four of them, all held at once
    with their values and masks, need four times that: refused before any is built."""
    import compress.limits as limits

    monkeypatch.setattr(limits, "available_memory", lambda: 0)  # the bound's 64 MiB floor
    empty = {"count": 0, "nbits": 0, "chunks": [0, 0], "bits": [0, 0]}
    entries = [{"name": f"w{i}", "shape": [8 << 20], "bits": 1, "k": 1, "offset_bits": 1, "codebook": [8 * i, 4],
                "index": {**empty, "lengths": [8 * i + 4, 2]}, "offsets": {**empty, "lengths": [8 * i + 6, 2]}}
               for i in range(4)]
    header = {"format": "compress.dcz/1", "chunk": 4096, "model": {}, "shared": entries, "raw": [0, 0]}
    with pytest.raises(limits.TooLargeError, match="33,554,432 weights"):
        decode_container(hand_built(header, bytes(32)), "crafted.dcz")


def test_a_header_over_the_json_bound_is_refused_before_parsing(monkeypatch):
    import compress.limits as limits

    monkeypatch.setattr(limits, "MAX_JSON_BYTES", 1000)
    header = {"format": "compress.dcz/1", "chunk": 4096, "model": {"pad": "x" * 2000}, "shared": [], "raw": [0, 0]}
    with pytest.raises(ContainerError, match="over the bound of 1,000 \\(MAX_JSON_BYTES\\)"):
        decode_container(hand_built(header, b""), "crafted.dcz")
