import os
import sys
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from tests_support import make_image_folder as make_folder
from tests_support import make_mixed_folder

from compress import data as D
from compress.errors import CompressError


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))


def test_folder_dataset_loads_and_caches(tmp_path):
    root = make_folder(tmp_path / "ds")
    first = D.load_dataset(str(root), "train")
    assert first.images.shape == (12, 3, 8, 8) and first.images.dtype == torch.uint8
    assert first.classes == ["cat", "dog"] and first.labels.tolist() == [0] * 6 + [1] * 6
    assert list((tmp_path / "cache").glob("*.safetensors"))
    again = D.load_dataset(str(root), "train")
    assert torch.equal(first.images, again.images)


def test_archive_dataset_matches_folder(tmp_path):
    root = make_folder(tmp_path / "ds")
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="wrapped")
    a = D.load_dataset(str(archive), "test")
    f = D.load_dataset(str(root), "test")
    assert torch.equal(a.images, f.images) and a.classes == f.classes


def test_stratified_limit_balances_classes_and_is_seeded(tmp_path):
    root = make_folder(tmp_path / "ds", classes=("a", "b", "c"), per_class=10)
    sub = D.load_dataset(str(root), "train", limit=9, seed=3)
    assert torch.bincount(sub.labels).tolist() == [3, 3, 3]
    assert torch.equal(sub.images, D.load_dataset(str(root), "train", limit=9, seed=3).images)
    assert not torch.equal(sub.images, D.load_dataset(str(root), "train", limit=9, seed=4).images)


def test_mislabelled_dataset_is_refused(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "test" / "dog").rename(root / "test" / "wolf")
    with pytest.raises(CompressError, match="class folders differ"):
        D.load_dataset(str(root), "train")


def test_empty_and_missing_datasets(tmp_path):
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(CompressError, match="no images"):
        D.load_dataset(str(tmp_path / "empty"), "train")
    with pytest.raises(CompressError, match="not found"):
        D.load_dataset(str(tmp_path / "nope"), "train")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar file at all")
    with pytest.raises(CompressError, match="cannot read archive"):
        D.load_dataset(str(bad), "train")


def test_corrupt_image_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "train" / "cat" / "0.png").write_bytes(b"garbage")
    with pytest.raises(CompressError, match="0.png"):
        D.load_dataset(str(root), "train")


def test_augment_crop_flip_moves_content_within_the_padding():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).reshape(2, 3, 8, 8).to(torch.uint8)
    out = D.augment_crop_flip(x, pad=2, generator=gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(2):
        img = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        crops = [img[:, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
        crops += [c.flip(2) for c in crops]
        assert any(torch.equal(out[i], c) for c in crops)


def test_batches_normalize_and_cover_every_image_once():
    ds = D.ImageSet(torch.randint(0, 255, (10, 3, 4, 4), dtype=torch.uint8), torch.arange(10), ["x"] * 10)
    seen = torch.cat([y for _, y in D.Batches(ds, 4, [0.5] * 3, [0.25] * 3, train=True, seed=1)])
    assert sorted(seen.tolist()) == list(range(10))
    x, _ = next(iter(D.Batches(ds, 10, [0.5] * 3, [0.25] * 3, train=False)))
    assert torch.allclose(x, (ds.images.float() / 255 - 0.5) / 0.25)


def test_shared_cifar10_copy_loads(cifar10_archive, monkeypatch):
    monkeypatch.setenv(D.DATA_ENV, str(cifar10_archive))
    test = D.load_dataset("cifar10", "test", limit=50)
    assert test.images.shape == (50, 3, 32, 32)
    assert test.classes[0] == "airplane" and len(test.classes) == 10


# --- images of any size, the content-aware cache, auto mode ---------------------------------------

def test_mixed_sizes_need_an_input_size(tmp_path):
    """The message named only the library's input_size, not the CLI's --input-size."""
    root = make_mixed_folder(tmp_path / "ds")
    with pytest.raises(CompressError, match=r"pass input_size \(CLI: --input-size\) to resize") as err:
        D.load_dataset(str(root), "train", mode="memory")
    assert "\n" not in str(err.value) and str(root) in str(err.value)


@pytest.mark.parametrize("size,stored", [(16, 16), (64, 73)])
def test_mixed_sizes_and_kinds_become_rgb_squares(tmp_path, size, stored):
    root = make_mixed_folder(tmp_path / "ds")
    data = D.load_dataset(str(root), "train", input_size=size, mode="memory")
    assert isinstance(data, D.ImageSet) and isinstance(data, D.ImageData)
    assert data.stored.shape == (12, 3, stored, stored) and data.stored.dtype == torch.uint8
    assert data.images.shape == (12, 3, size, size) and data.input_size == (3, size, size)
    assert data.classes == ["ant", "bee", "cow"] and data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # ant/2.png is the grayscale one: its three channels are equal; the others are not.
    gray = data.images[2]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert not torch.equal(data.images[0][0], data.images[0][1])
    # The evaluation images are the center of the stored square.
    off = (stored - size) // 2
    assert torch.equal(data.images, data.stored[:, :, off:off + size, off:off + size])


def test_resize_is_short_side_then_center_crop(tmp_path):
    root = tmp_path / "ds"
    img = np.zeros((12, 36, 3), dtype=np.uint8)  # 36 wide, 12 tall: red | green | blue thirds
    img[:, :12, 0] = img[:, 12:24, 1] = img[:, 24:, 2] = 255
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True)
        Image.fromarray(img).save(root / split / "a" / "0.png")
    # The short side is already 12: only the green middle third survives the center crop.
    x = D.load_dataset(str(root), "train", input_size=12, mode="memory").images[0]
    assert (x[1] == 255).all() and (x[0] == 0).all() and (x[2] == 0).all()
    # At 8 px the short side is resized to 8 (aspect kept), then the middle is cropped: still green only.
    x = D.load_dataset(str(root), "train", input_size=8, mode="memory").images[0][:, :, 1:-1]  # inner columns
    assert (x[1] >= 250).all() and (x[0] <= 5).all() and (x[2] <= 5).all()


def test_empty_class_folder_is_named(tmp_path):
    root = make_folder(tmp_path / "ds")
    (root / "train" / "zebra").mkdir()
    (root / "test" / "zebra").mkdir()
    (root / "train" / "zebra" / "notes.txt").write_text("not an image")
    with pytest.raises(CompressError, match=r"class folder .*train/zebra has no images") as err:
        D.load_dataset(str(root), "train")
    assert "\n" not in str(err.value)
    archive = tmp_path / "ds.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    with pytest.raises(CompressError, match=r"train/zebra has no images"):
        D.load_dataset(str(archive), "train")


def test_cache_follows_file_changes(tmp_path):
    root = make_folder(tmp_path / "ds")
    first = D.load_dataset(str(root), "train", mode="memory")
    target = root / "train" / "cat" / "0.png"
    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(target)
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    second = D.load_dataset(str(root), "train", mode="memory")
    assert not torch.equal(first.images, second.images)
    assert (second.images[0] == 7).all() and torch.equal(first.images[1:], second.images[1:])
    # The stale cache file is replaced, not kept beside the new one.
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "train" / "cat" / "new.png")
    assert len(D.load_dataset(str(root), "train", mode="memory")) == 13


def test_cache_key_covers_the_input_size(tmp_path):
    root = make_mixed_folder(tmp_path / "ds")
    assert D.load_dataset(str(root), "test", input_size=16, mode="memory").input_size == (3, 16, 16)
    assert D.load_dataset(str(root), "test", input_size=24, mode="memory").input_size == (3, 24, 24)
    assert D.load_dataset(str(root), "test", input_size=16, mode="memory").input_size == (3, 16, 16)


def test_unwritable_cache_degrades_with_one_warning(tmp_path, monkeypatch, capsys):
    root = make_folder(tmp_path / "ds")
    reference = D.load_dataset(str(root), "train", mode="memory")
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache directory cannot be created under a file")
    monkeypatch.setenv(D.CACHE_ENV, str(blocker / "cache"))
    capsys.readouterr()
    data = D.load_dataset(str(root), "train", mode="memory")
    assert torch.equal(data.images, reference.images)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: cannot write the data cache")


def test_full_disk_degrades_to_no_cache(tmp_path, monkeypatch, capsys):
    import errno

    import safetensors.torch

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    root = make_folder(tmp_path / "ds")
    data = D.load_dataset(str(root), "train", mode="memory")
    assert data.images.shape == (12, 3, 8, 8)
    assert "No space left on device" in capsys.readouterr().err
    assert not [p for p in (tmp_path / "cache").glob("*") if p.is_file()]


def test_auto_mode_says_what_it_chose(tmp_path, monkeypatch, capsys):
    root = make_mixed_folder(tmp_path / "ds")
    data = D.load_dataset(str(root), "train", input_size=16)
    err = capsys.readouterr().err.strip().splitlines()
    assert isinstance(data, D.ImageSet) and len(err) == 1 and "in memory" in err[0]
    monkeypatch.setattr(sys.modules["compress.data.load"], "available_memory", lambda: 1000)
    data = D.load_dataset(str(root), "train", input_size=16, workers=0)
    err = capsys.readouterr().err.strip().splitlines()
    assert isinstance(data, D.StreamSet) and len(err) == 1 and "streamed from disk" in err[0]
    # Forcing memory past what the machine has is refused before decoding, with the figures.
    with pytest.raises(CompressError, match="only 0 MB of memory is available"):
        D.load_dataset(str(root), "test", input_size=16, mode="memory")


def test_bad_options_are_refused(tmp_path):
    root = make_folder(tmp_path / "ds")
    for bad in (0, 3, 10**6, 1.5, True):
        with pytest.raises(CompressError, match="input_size"):
            D.load_dataset(str(root), "train", input_size=bad)
    with pytest.raises(CompressError, match="data mode 'fast'"):
        D.load_dataset(str(root), "train", mode="fast")
    with pytest.raises(CompressError, match="limit"):
        D.load_dataset(str(root), "train", limit=0)


def test_random_resized_crop_keeps_each_image_its_own():
    # Every image is one flat colour: whatever box is drawn, the crop must keep that image's colour.
    colours = torch.arange(0, 250, 25, dtype=torch.uint8)
    x = colours.view(-1, 1, 1, 1).expand(10, 3, 20, 20).contiguous()
    out = D.random_resized_crop_flip(x, (16, 16), torch.Generator().manual_seed(0))
    assert out.shape == (10, 3, 16, 16)
    assert torch.allclose(out, colours.float().view(-1, 1, 1, 1).expand_as(out), atol=1e-3)


def test_random_resized_crop_draws_boxes_and_flips():
    ramp = torch.arange(64, dtype=torch.float32).mul(4).to(torch.uint8)  # left dark, right bright
    x = ramp.view(1, 1, 1, 64).expand(64, 3, 64, 64).contiguous()
    out = D.random_resized_crop_flip(x, (32, 32), torch.Generator().manual_seed(1))
    again = D.random_resized_crop_flip(x, (32, 32), torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    slope = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    assert (slope > 0).any() and (slope < 0).any()  # some flipped, some not
    widths = slope.abs()
    assert widths.max() > 2 * widths.min()  # boxes of different sizes


def test_large_inputs_train_with_random_resized_crops(tmp_path):
    root = make_mixed_folder(tmp_path / "ds")
    data = D.load_dataset(str(root), "train", input_size=64, mode="memory")
    batches = data.batches(5, [0.5] * 3, [0.25] * 3, train=True, seed=2)
    assert len(batches) == 3
    first = [(x.clone(), y.clone()) for x, y in batches]
    assert [x.shape for x, _ in first] == [(5, 3, 64, 64)] * 2 + [(2, 3, 64, 64)]
    again = list(batches)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    batches.set_epoch(1)
    assert not torch.equal(next(iter(batches))[0], first[0][0])
    # Augmented images are not just the evaluation crop.
    plain = D.normalize(data.images, [0.5] * 3, [0.25] * 3)
    x = first[0][0]
    assert not any(torch.allclose(x[0], plain[i]) for i in range(len(data)))


def test_subset_and_limit_agree(tmp_path):
    root = make_mixed_folder(tmp_path / "ds", per_class=6)
    full = D.load_dataset(str(root), "train", input_size=16, mode="memory")
    limited = D.load_dataset(str(root), "train", limit=7, seed=5, input_size=16, mode="memory")
    picked = full.subset(D.stratified_indices(full.labels, 7, seed=5))
    assert torch.equal(limited.images, picked.images) and torch.equal(limited.labels, picked.labels)


# --- the epoch's random choices drawn up front, the device copy made once ------------------------------

@pytest.mark.parametrize("size,crop", [(32, None), (72, 64)])
def test_an_epoch_drawn_up_front_gives_the_batches_of_drawing_per_batch(size, crop):
    """Drawing every batch's crop/flip choices at the start of the epoch (one copy to the device) keeps the
    exact stream of the per-batch draws: a run's order and augmentation do not change with the device."""
    from compress.data.memory import epoch_generator

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (37, 3, size, size), dtype=torch.uint8, generator=gen)
    data = D.ImageSet(images, torch.arange(37) % 3, ["a", "b", "c"], crop)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    batches = data.batches(8, mean, std, train=True, seed=5)
    batches.set_epoch(2)
    got = list(batches)
    g = epoch_generator(5, 2)
    order = torch.randperm(37, generator=g)
    view = data.images
    for b, (x, y) in enumerate(got):
        idx = order[b * 8:(b + 1) * 8]
        if batches.random_resized:
            expected = D.random_resized_crop_flip(data.stored[idx], tuple(view.shape[-2:]), g)
        else:
            expected = D.augment_crop_flip(view[idx], pad=batches.pad, generator=g)
        assert torch.equal(x, D.normalize(expected, mean, std)) and torch.equal(y, data.labels[idx])
    assert len(got) == 5


def test_on_the_cpu_the_images_are_not_copied():
    data = D.ImageSet(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4), ["a"] * 4)
    stored, labels = data.on("cpu")
    assert stored is data.stored and labels is data.labels


@pytest.mark.parametrize("seed", [2 ** 64, -1, 1.0])
def test_a_seed_no_generator_takes_is_refused_naming_it(seed):
    with pytest.raises(CompressError, match="seed"):
        D.stratified_indices(torch.arange(10) % 2, 4, seed=seed)


def test_a_split_folder_without_class_folders_is_described_as_it_is(tmp_path):
    """An archive whose train/ holds only text files has a train/ folder: the message says what it holds."""
    from compress.data.sources import list_archive

    for split in ("train", "test"):
        (tmp_path / "d" / split).mkdir(parents=True)
        (tmp_path / "d" / split / "notes.txt").write_text("x")
    with tarfile.open(tmp_path / "d.tar", "w") as tar:
        for f in sorted((tmp_path / "d").rglob("*.txt")):
            tar.add(f, arcname=str(f.relative_to(tmp_path / "d")))
    with pytest.raises(CompressError, match=r"d.tar: train/ holds no class folder with images \(found notes.txt; "
                                            r"expected train/CLASS/IMAGE"):
        list_archive(tmp_path / "d.tar", "train")


def test_a_tar_is_decoded_into_the_buffer_whose_memory_was_checked(tmp_path, monkeypatch):
    """The memory estimate measured the first image by name, the buffer was sized from the first decoded,
    which in a tar is the first in archive order: large images stored first passed an 8x8 estimate and
    filled a buffer sized for them (a few thousand such PNGs need hundreds of GB). Now the buffer has the
    checked size and the first image of another size is refused from its header, before its pixels."""
    import io

    from compress.data import decode
    from compress.errors import MixedImageSizes

    def png(side):
        buf = io.BytesIO()
        Image.new("RGB", (side, side)).save(buf, format="PNG")
        return buf.getvalue()

    with tarfile.open(tmp_path / "order.tar", "w") as tar:
        for name, data in [("train/a/big.png", png(512)), ("train/a/00.png", png(8)), ("test/a/0.png", png(8))]:
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    decoded = []
    real = decode._to_rgb
    monkeypatch.setattr(decode, "_to_rgb", lambda img, name="image": decoded.append(img.size) or real(img, name))
    with pytest.raises(MixedImageSizes, match=r"big.png is 512x512, not 8x8, the size of .*00.png; pass input_size"):
        D.load_dataset(str(tmp_path / "order.tar"), "train", mode="memory")
    assert (512, 512) not in decoded
