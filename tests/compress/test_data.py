import tarfile

import pytest
import torch

from compress import data as D
from compress.errors import CompressError
from tests_support import make_image_folder as make_folder


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
