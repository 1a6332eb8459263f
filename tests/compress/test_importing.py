"""compress.importing: state dicts read from checkpoint files without unpickling anything."""

import pytest
import torch
import torchvision

from compress.errors import CompressError
from compress.importing import fitted_keys, read_state_dict


def test_wrapped_and_data_parallel_checkpoints_are_unwrapped(tmp_path):
    net = torchvision.models.resnet18(num_classes=2)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pt")
    unwrapped = read_state_dict(tmp_path / "ckpt.pt")
    assert set(fitted_keys(unwrapped, net.state_dict())) == set(net.state_dict())


def test_prefixes_are_stripped_only_where_the_model_lacks_them_and_however_nested():
    """DistributedDataParallel around torch.compile (module._orig_mod.) kept one prefix; a model whose own
    names all begin with module. had it stripped, and was refused for a tensor the file held."""
    own = {"module.conv.weight": torch.zeros(1), "module.bn.weight": torch.zeros(1)}
    assert set(fitted_keys(dict(own), own)) == set(own)
    nested = {f"module._orig_mod.{k}": v for k, v in own.items()}
    assert set(fitted_keys(nested, {k[len("module."):]: v for k, v in own.items()})) == {"conv.weight", "bn.weight"}


def test_a_tensor_claiming_more_values_than_its_file_stored_is_refused(tmp_path):
    """A stride-0 (fc.weight) of a kilobyte claimed a million rows: the class count and the classifier were
    made of that shape (2.7 GB for N = 1e6)."""
    torch.save({"fc.weight": torch.zeros(1).expand(100_000, 512)}, tmp_path / "tiny.pth")
    assert (tmp_path / "tiny.pth").stat().st_size < 4096
    with pytest.raises(CompressError, match=r"tensor 'fc.weight' claims \[100000, 512\] \(51,200,000 values\) over "
                                            r"4 stored bytes"):
        read_state_dict(tmp_path / "tiny.pth")


def test_a_training_checkpoint_with_its_arguments_and_timms_name_is_read(tmp_path):
    """timm's model_best.pth.tar holds the run's argparse.Namespace beside the weights: refused by its suffix,
    then by torch's weights-only reader with advice to turn that reader off."""
    import argparse

    net = torchvision.models.resnet18(num_classes=2)
    torch.save({"epoch": 3, "state_dict": net.state_dict(), "args": argparse.Namespace(lr=0.1)},
               tmp_path / "model_best.pth.tar")
    assert set(read_state_dict(tmp_path / "model_best.pth.tar")) == set(net.state_dict())


def test_refusals_name_what_is_wrong_with_the_file(tmp_path):
    (tmp_path / "dir.pth").mkdir()
    (tmp_path / "empty.pth").write_bytes(b"")
    torch.save({"w": torch.zeros(1), "extra": torch.nn.Identity()}, tmp_path / "module.pth")
    torch.save({"w": torch.eye(3).to_sparse()}, tmp_path / "sparse.pth")
    for name, message in (("dir.pth", r"^weights file .*dir.pth is a directory, not a regular file$"), ("empty.pth", r"empty.pth is empty$"),
                          ("module.pth", r"\(pickled code is refused\): it holds a torch.nn.modules.linear.Identity "
                                         r"object; save the state dict alone"),
                          ("sparse.pth", r"tensor 'w' is torch.sparse_coo, not a dense tensor")):
        with pytest.raises(CompressError, match=message):
            read_state_dict(tmp_path / name)


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
    expected = {k[len("module."):]: v for k, v in state.items()}
    assert next(iter(fitted_keys(_unwrap(state, tmp_path / "x.pt"), expected))) == "layer0.weight"
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
