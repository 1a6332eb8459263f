"""compress.importing: state dicts read from checkpoint files without unpickling anything."""

import pytest
import torch
import torchvision

from compress.errors import CompressError
from compress.importing import read_state_dict


def test_wrapped_and_data_parallel_checkpoints_are_unwrapped(tmp_path):
    net = torchvision.models.resnet18(num_classes=2)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    unwrapped = read_state_dict(tmp_path / "ckpt.pt")
    assert set(unwrapped) == set(net.state_dict())


def test_pickled_code_is_refused(tmp_path):
    torch.save({"model": torchvision.models.resnet18(num_classes=2)}, tmp_path / "whole.pt")
    with pytest.raises(CompressError, match="weights-only"):
        read_state_dict(tmp_path / "whole.pt")


def test_a_deflated_checkpoint_is_refused_before_it_is_inflated(tmp_path):
    """torch.load inflates deflated zip entries: 66 KB became a 64 MiB tensor. torch.save never deflates."""
    import zipfile

    torch.save({"w": torch.zeros(1 << 16)}, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, \
            zipfile.ZipFile(tmp_path / "packed.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry))
    assert read_state_dict(tmp_path / "plain.pt")["w"].numel() == 1 << 16
    with pytest.raises(CompressError, match="is compressed, which torch.save never writes"):
        read_state_dict(tmp_path / "packed.pt")


@pytest.mark.parametrize("ending", [b"PK\x05\x06" + bytes(4), b"junk", b""])
def test_a_deflated_checkpoint_with_another_ending_is_refused_before_it_is_inflated(tmp_path, monkeypatch, ending):
    """8 bytes appended to a deflated checkpoint (a cut end record) made zipfile.is_zipfile say no, which
    skipped the check, and torch, which knows a zip by its first bytes, inflated 200 KB to 200 MB.
    A zip comment is the other way the two readers can find different directories."""
    import zipfile

    torch.save({"w": torch.zeros(1 << 16)}, tmp_path / "plain.pt")
    with zipfile.ZipFile(tmp_path / "plain.pt") as src, \
            zipfile.ZipFile(tmp_path / "packed.pt", "w", zipfile.ZIP_DEFLATED) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry))
        if not ending:
            dst.comment = b"a comment"
    (tmp_path / "packed.pt").write_bytes((tmp_path / "packed.pt").read_bytes() + ending)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load ran on the file"))
    with pytest.raises(CompressError, match="does not end as torch.save ends one"):
        read_state_dict(tmp_path / "packed.pt")


def test_prefixes_are_found_once_for_many_keys(tmp_path):
    """Whether every key shares a prefix was asked again for each key: quadratic (8k keys, 7 s)."""
    from compress.importing import _unwrap

    state = {f"module.layer{i}.weight": torch.zeros(0) for i in range(20_000)}
    assert next(iter(_unwrap(state, tmp_path / "x.pt"))) == "layer0.weight"
    with pytest.raises(CompressError, match="key 3 is a int, not a tensor name"):
        _unwrap({3: torch.zeros(1)}, tmp_path / "x.pt")


def test_the_legacy_format_is_refused_before_torch_allocates_its_declared_sizes(tmp_path):
    """The legacy (non-zip) pickle declares each storage's element count and torch allocates it before reading:
    counts raised to 2**31 in a 1.6 MB file asked for 17 GB (a helper's probe, 2026-12-07)."""
    import struct

    torch.save({"a": torch.zeros(70000, dtype=torch.float64)}, tmp_path / "old.pt",
               _use_new_zipfile_serialization=False)
    blob = (tmp_path / "old.pt").read_bytes()
    declared = b"J" + struct.pack("<i", 70000)
    assert declared in blob
    (tmp_path / "huge.pt").write_bytes(blob.replace(declared, b"J" + struct.pack("<i", 0x7FFFFFF0)))
    for name in ("old.pt", "huge.pt"):
        with pytest.raises(CompressError, match="not in torch.save's zip format.*re-save"):
            read_state_dict(tmp_path / name)
