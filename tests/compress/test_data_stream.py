"""The streaming path (DataLoader workers over files or a user's torch Dataset) against the in-memory one."""

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from tests_support import make_mixed_folder

from compress import data as D
from compress.errors import CompressError

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def mixed(tmp_path):
    return make_mixed_folder(tmp_path / "ds")


def _eval_batches(data, batch_size=5):
    return [(x, y) for x, y in data.batches(batch_size, MEAN, STD, train=False)]


@pytest.mark.parametrize("size", [16, 64])
def test_stream_and_memory_agree_on_evaluation_batches(mixed, size):
    memory = D.load_dataset(str(mixed), "test", input_size=size, mode="memory")
    stream = D.load_dataset(str(mixed), "test", input_size=size, mode="stream", workers=0)
    assert isinstance(stream, D.StreamSet) and isinstance(stream, D.ImageData)
    assert (stream.classes, stream.input_size, len(stream)) == (memory.classes, memory.input_size, len(memory))
    assert torch.equal(stream.labels, memory.labels)
    a, b = _eval_batches(memory), _eval_batches(stream)
    assert len(a) == len(b) == len(memory.batches(5, MEAN, STD, train=False)) == 3
    for (xm, ym), (xs, ys) in zip(a, b):
        assert xs.dtype == torch.float32 and xs.shape == xm.shape
        assert torch.equal(xm, xs) and torch.equal(ym, ys)
    assert torch.equal(stream.eval_images(), memory.images)
    assert stream.channel_stats() == memory.channel_stats()


def test_stream_training_is_reproducible_per_seed_and_epoch_whatever_the_workers(mixed):
    inline = D.load_dataset(str(mixed), "train", input_size=16, mode="stream", workers=0)
    pooled = D.load_dataset(str(mixed), "train", input_size=16, mode="stream", workers=2)
    memory = D.load_dataset(str(mixed), "train", input_size=16, mode="memory")

    def epoch(data, e, seed=3):
        batches = data.batches(4, MEAN, STD, train=True, seed=seed, drop_last=True)
        batches.set_epoch(e)
        return [(x, y) for x, y in batches]

    first, again = epoch(inline, 0), epoch(pooled, 0)
    assert len(first) == 3 and first[0][0].shape == (4, 3, 16, 16)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    # The label order is the in-memory path's: both shuffle with the same (seed, epoch) stream.
    assert torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in epoch(memory, 0)]))
    later = epoch(inline, 1)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in later]))
    other_seed = epoch(inline, 0, seed=4)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other_seed))
    # Augmented: not the evaluation images.
    plain = D.normalize(memory.images, MEAN, STD)
    assert not any(torch.equal(first[0][0][0], p) for p in plain)


def test_stream_training_at_64_px_uses_random_resized_crops(mixed):
    stream = D.load_dataset(str(mixed), "train", input_size=64, mode="stream", workers=0)
    batches = stream.batches(6, MEAN, STD, train=True, seed=0, channels_last=True)
    x, _ = next(iter(batches))
    assert x.shape == (6, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    x2, _ = next(iter(batches))
    assert torch.equal(x, x2)


def test_compressed_and_plain_archives_stream_like_the_folder(mixed, tmp_path):
    folder = _eval_batches(D.load_dataset(str(mixed), "test", input_size=16, mode="stream", workers=0))
    gz, plain = tmp_path / "ds.tar.gz", tmp_path / "ds.tar"
    for path, how in ((gz, "w:gz"), (plain, "w")):
        with tarfile.open(path, how) as tar:
            tar.add(mixed, arcname="wrapped")
    for path in (gz, plain):
        got = _eval_batches(D.load_dataset(str(path), "test", input_size=16, mode="stream", workers=2))
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(folder, got))
    # The compressed archive was decompressed once into the cache, for random access.
    assert len(list((tmp_path / "cache").glob("ds.tar.gz-*.tar"))) == 1


def test_stream_limit_and_subset(mixed):
    stream = D.load_dataset(str(mixed), "train", input_size=16, mode="stream", limit=6, seed=1, workers=0)
    memory = D.load_dataset(str(mixed), "train", input_size=16, mode="memory", limit=6, seed=1)
    assert len(stream) == 6 and torch.bincount(stream.labels).tolist() == [2, 2, 2]
    assert torch.equal(stream.eval_images(), memory.images)
    sub = stream.subset([5, 0])
    assert torch.equal(sub.eval_images(), memory.images[[5, 0]]) and sub.labels.tolist() == [2, 0]


def test_a_broken_image_stops_a_worker_with_one_line(mixed):
    (mixed / "test" / "bee" / "1.jpg").write_bytes(b"not a jpeg")
    stream = D.load_dataset(str(mixed), "test", input_size=16, mode="stream", workers=2)
    with pytest.raises(CompressError, match=r"image .*bee/1\.jpg is not a JPEG, PNG") as err:
        _eval_batches(stream)
    assert "\n" not in str(err.value)


def test_own_size_streams_need_one_size(mixed):
    """The message named only the library's input_size, not the CLI's --input-size."""
    stream = D.load_dataset(str(mixed), "test", mode="stream", workers=0)
    with pytest.raises(CompressError, match=r"pass input_size \(CLI: --input-size\) to resize them all"):
        _eval_batches(stream)


# --- a user's torch Dataset ------------------------------------------------------------------------

class Shapes(torch.utils.data.Dataset):
    """PIL images of mixed sizes and modes; label = which half is bright."""

    classes = ("left", "right")

    def __init__(self, n=10):
        self.n = n
        self.targets = [i % 2 for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        w, h = 20 + 3 * i, 30 - i
        img = np.zeros((h, w), dtype=np.uint8)
        if self.targets[i]:
            img[:, w // 2:] = 255
        else:
            img[:, :w // 2] = 255
        return Image.fromarray(img).convert("L" if i % 3 else "RGB"), self.targets[i]


class Tensors(torch.utils.data.Dataset):
    def __init__(self, scale=1.0):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.rand(8, 3, 12, 12, generator=gen) * scale
        self.y = torch.arange(8) % 4

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_from_torch_dataset_of_pil_images():
    data = D.from_torch(Shapes(), input_size=16, workers=0)
    assert isinstance(data, D.ImageData)
    assert data.classes == ["left", "right"] and data.input_size == (3, 16, 16) and len(data) == 10
    x, y = next(iter(data.batches(10, [0.5] * 3, [0.5] * 3, train=False)))
    assert x.shape == (10, 3, 16, 16) and y.tolist() == [i % 2 for i in range(10)]
    # The bright half survives resizing: right-bright images are brighter on the right.
    right_minus_left = x[:, 0, :, 10:].mean((1, 2)) - x[:, 0, :, :6].mean((1, 2))
    assert ((right_minus_left > 0) == y.bool()).all()
    batches = data.batches(4, [0.5] * 3, [0.5] * 3, train=True, seed=0)
    assert [len(b) for b, _ in batches] == [4, 4, 2]
    assert data.subset([1, 3]).labels.tolist() == [1, 1]


def test_from_torch_dataloader_and_tensors():
    loader = torch.utils.data.DataLoader(Tensors(), batch_size=3, num_workers=2)
    data = D.from_torch(loader, classes=list("abcd"))
    assert data.workers == 2 and data.input_size == (3, 12, 12)
    x, y = next(iter(data.batches(8, [0.0] * 3, [1.0] * 3, train=False)))
    # Float pixels in [0, 1] come back as they were, to within 8-bit quantization.
    assert torch.allclose(x, Tensors().x, atol=0.5 / 255 + 1e-6) and torch.equal(y, Tensors().y)


def test_from_torch_refuses_what_it_cannot_use():
    with pytest.raises(CompressError, match="pass classes="):
        D.from_torch(Tensors())
    with pytest.raises(CompressError, match=r"must lie in \[0, 1\]"):
        data = D.from_torch(Tensors(scale=5.0), classes=list("abcd"), workers=0)
        _eval_batches(data)
    with pytest.raises(CompressError, match="there are 2 classes"):
        D.from_torch(Tensors(), classes=["a", "b"])
    with pytest.raises(CompressError, match="not a map-style Dataset"):
        D.from_torch(iter([(torch.zeros(3, 4, 4), 0)]))


def test_fit_and_evaluate_take_a_streamed_set(tmp_path):
    from compress.training import Recipe, evaluate, fit
    from compress.models import create_model

    data = D.from_torch(Shapes(16), input_size=32, workers=0)
    model = create_model("vgg11", num_classes=2, width=0.125)
    recipe = Recipe.named("fast", epochs=1, batch_size=8)
    result = fit(model, data, data, tmp_path / "run", recipe, mean=[0.5] * 3, std=[0.5] * 3, progress=False)
    assert result["last"]["epoch"] == 1 and result["last"]["img_per_s"] > 0
    assert evaluate(model, data, [0.5] * 3, [0.5] * 3)["images"] == 16


def test_from_torch_reads_labels_through_the_target_transform(tmp_path):
    """`targets` are the labels before target_transform: a permutation set there was silently lost."""
    import torchvision
    from tests_support import make_image_folder

    root = make_image_folder(tmp_path / "ds", classes=("a", "b", "c"), per_class=1, splits=("train",))
    folder = torchvision.datasets.ImageFolder(root / "train", target_transform=lambda y: 2 - y)
    data = D.from_torch(folder, classes=["c", "b", "a"], workers=0)
    assert data.labels.tolist() == [2, 1, 0]
    plain = D.from_torch(torchvision.datasets.ImageFolder(root / "train"), classes=["a", "b", "c"], workers=0)
    assert plain.labels.tolist() == [0, 1, 2]
