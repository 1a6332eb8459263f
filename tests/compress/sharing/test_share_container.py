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
