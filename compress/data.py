"""Datasets decoded once into uint8 tensors, cached on disk, and augmented as whole-batch tensor ops.

A data spec is one of:
  * ``cifar10`` / ``cifar100``: torchvision's copy (downloaded when online); for ``cifar10`` the
    environment variable ``COMPRESS_DATA`` may point at a local archive or folder instead;
  * an ImageFolder directory with ``train/`` and ``test/`` sub-folders (one folder per class);
  * a ``.tar`` / ``.tar.gz`` archive holding the same layout.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.errors import CompressError

DATA_ENV = "COMPRESS_DATA"
CACHE_ENV = "COMPRESS_CACHE"
DATA_DIR_ENV = "COMPRESS_DATA_DIR"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLIT_ALIASES = {"train": ("train", "training"), "test": ("test", "val", "validation")}


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the images scaled to [0, 1]."""
        # Chunked sums: a float64 copy of a whole training set would need gigabytes.
        total = torch.zeros(self.images.shape[1], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for chunk in self.images.split(4096):
            x = chunk.to(torch.float64).div_(255.0)
            total += x.sum(dim=(0, 2, 3))
            squares += x.square().sum(dim=(0, 2, 3))
        n = self.images.numel() // self.images.shape[1]
        mean = total / n
        std = ((squares - n * mean.square()) / max(n - 1, 1)).clamp_min(0).sqrt()
        return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "compress")
    return Path(root)


def resolve_spec(spec: str) -> str:
    """Map the ``cifar10`` name to the local copy named by COMPRESS_DATA when set."""
    if spec.lower() == "cifar10" and os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV]
    return spec


def load_dataset(spec: str, split: str, limit: int | None = None, seed: int = 0) -> ImageSet:
    """Load one split of a dataset as uint8 tensors; `limit` draws a stratified, seeded subset."""
    if split not in SPLIT_ALIASES:
        raise CompressError(f"unknown split {split!r}: expected 'train' or 'test'")
    source = resolve_spec(spec)
    if source.lower() in ("cifar10", "cifar100"):
        data = _load_torchvision_cifar(source.lower(), split)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise CompressError(f"dataset not found: {path}")
        data = _load_cached_folder_or_archive(path, split)
    if len(data) == 0:
        raise CompressError(f"dataset {spec!r} has no images in its {split} split")
    if limit is not None:
        data = stratified_subset(data, limit, seed)
    return data


def stratified_subset(data: ImageSet, limit: int, seed: int = 0) -> ImageSet:
    """Pick `limit` images with classes as balanced as the data allows, reproducibly for a seed."""
    if limit <= 0:
        raise CompressError(f"limit must be positive, got {limit}")
    if limit >= len(data):
        return data
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen)
    labels = data.labels[order]
    # Rank each image within its class in shuffled order; taking the lowest ranks first
    # interleaves classes, so any prefix is as balanced as possible.
    rank = torch.empty_like(labels)
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        rank[members] = torch.arange(members.numel())
    key = rank * (len(data) + 1) + torch.arange(len(data))
    chosen = order[key.argsort()[:limit]].sort().values
    return ImageSet(data.images[chosen], data.labels[chosen], data.classes)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 N×C×H×W → float32 standardized with per-channel statistics of [0, 1] pixels."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def augment_crop_flip(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad-and-random-crop plus horizontal flip for a whole uint8 batch, without per-image Python."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dev = images.device
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    flip = torch.rand(n, generator=generator).to(dev) < 0.5
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]
    cols = ox[:, None] + torch.arange(w, device=dev)[None, :]
    # A flipped crop reads its columns right to left.
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_idx = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch_idx, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


class Batches:
    """Iterate over an ImageSet in batches of normalized float tensors on `device`.

    Shuffling depends only on (seed, epoch), so a resumed run sees the same order it would have seen.
    """

    def __init__(self, data: ImageSet, batch_size: int, mean, std, *, train: bool, device="cpu",
                 seed: int = 0, channels_last: bool = False, drop_last: bool = False):
        self.data = data
        self.batch_size = batch_size
        self.mean, self.std = mean, std
        self.train = train
        self.device = torch.device(device)
        self.seed = seed
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.epoch = 0
        # Keep the uint8 images on the training device: four times smaller than floats and
        # augmentation then runs there too.
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.data)
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(n, generator=gen).to(self.device) if self.train else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            if order is not None:
                idx = order[sl]
                x, y = self.images[idx], self.labels[idx]
                x = augment_crop_flip(x, generator=gen)
            else:
                x, y = self.images[sl], self.labels[sl]
            x = normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


# --- sources -------------------------------------------------------------------------------------

def _load_torchvision_cifar(name: str, split: str) -> ImageSet:
    import torchvision

    root = os.environ.get(DATA_DIR_ENV) or str(cache_dir() / "torchvision")
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        ds = cls(root=root, train=(split == "train"), download=True)
    except Exception as exc:  # noqa: BLE001 - any download failure means the same thing to the user
        hint = f" or set {DATA_ENV} to a local copy (e.g. a cifar10-jpeg.tar.gz)" if name == "cifar10" else ""
        raise CompressError(
            f"could not get {name} into {root} ({type(exc).__name__}: {exc}); "
            f"put the torchvision files there (set {DATA_DIR_ENV}){hint}"
        ) from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.as_tensor(ds.targets, dtype=torch.int64), list(ds.classes))


def _source_key(path: Path, split: str) -> str:
    stat = path.stat()
    ident = f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{split}|v1"
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def _load_cached_folder_or_archive(path: Path, split: str) -> ImageSet:
    from safetensors.torch import load_file, save_file

    cache_file = cache_dir() / f"{path.name}-{split}-{_source_key(path, split)}.safetensors"
    classes_file = cache_file.with_suffix(".json")
    if cache_file.exists() and classes_file.exists():
        try:
            tensors = load_file(str(cache_file))
            classes = json.loads(classes_file.read_text())
            return ImageSet(tensors["images"], tensors["labels"], classes)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
            pass
    if path.is_dir():
        entries, classes = _folder_entries(path, split)
    else:
        entries, classes = _archive_entries(path, split)
    data = _decode(entries, classes, source=str(path))
    from compress.atomic import atomic_path, write_json

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_file) as tmp:
        save_file({"images": data.images.contiguous(), "labels": data.labels}, str(tmp))
    write_json(classes_file, data.classes)
    return data


def _split_prefix(names: set[str], split: str, source: Path) -> str:
    for alias in SPLIT_ALIASES[split]:
        if alias in names:
            return alias
    raise CompressError(f"{source} has no '{split}/' folder (found: {', '.join(sorted(names)) or 'nothing'})")


def _folder_entries(root: Path, split: str):
    split_dir = root / _split_prefix({p.name for p in root.iterdir() if p.is_dir()}, split, root)
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    _check_classes_match(root, split, classes, {p.name for p in root.iterdir() if p.is_dir()}, is_archive=False)
    entries = []
    for label, cls in enumerate(classes):
        for f in sorted((split_dir / cls).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                entries.append((label, f.read_bytes, str(f)))
    return entries, classes


def _archive_entries(path: Path, split: str):
    try:
        tar = tarfile.open(path)
        members = [m for m in tar.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CompressError(f"cannot read archive {path}: {exc}") from None
    # Archives may wrap everything in one top folder; strip it when present.
    parts = [m.name.strip("./").split("/") for m in members]
    tops = {p[0] for p in parts if len(p) > 1}
    strip = 1 if len(tops) == 1 and not (tops & set(SPLIT_ALIASES["train"] + SPLIT_ALIASES["test"])) else 0
    layout: dict[str, dict[str, list]] = {}
    for m, p in zip(members, parts):
        p = p[strip:]
        if len(p) == 3 and Path(p[2]).suffix.lower() in IMAGE_SUFFIXES:
            layout.setdefault(p[0], {}).setdefault(p[1], []).append(m)
    prefix = _split_prefix(set(layout), split, path)
    classes = sorted(layout[prefix])
    _check_classes_match(path, split, classes, set(layout), is_archive=True, layout=layout)
    entries = []
    for label, cls in enumerate(classes):
        for m in sorted(layout[prefix][cls], key=lambda m: m.name):
            entries.append((label, (lambda m=m: tar.extractfile(m).read()), f"{path}:{m.name}"))
    return entries, classes


def _check_classes_match(source, split, classes, split_names, *, is_archive, layout=None) -> None:
    """Train and test must name the same classes, or labels would silently mean different things."""
    other_split = "test" if split == "train" else "train"
    other = next((a for a in SPLIT_ALIASES[other_split] if a in split_names), None)
    if other is None:
        return
    if is_archive:
        other_classes = sorted(layout[other])
    else:
        other_classes = sorted(p.name for p in (Path(source) / other).iterdir() if p.is_dir())
    if other_classes != classes:
        raise CompressError(
            f"{source}: class folders differ between {split} and {other_split} "
            f"({len(classes)} vs {len(other_classes)} classes); labels would not line up"
        )


def _decode(entries, classes, source: str) -> ImageSet:
    from PIL import Image
    from tqdm import tqdm

    if not entries:
        raise CompressError(f"{source}: no images found")
    arrays, labels = [], []
    shape = None
    for label, read, name in tqdm(entries, desc=f"decoding {Path(source).name}", unit="img",
                                  leave=False, mininterval=1.0, disable=None):
        try:
            img = Image.open(io.BytesIO(read())).convert("RGB")
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
            raise CompressError(f"cannot decode image {name}: {exc}") from None
        arr = np.asarray(img, dtype=np.uint8)
        if shape is None:
            shape = arr.shape
        elif arr.shape != shape:
            raise CompressError(f"{name} is {arr.shape[1]}x{arr.shape[0]}, others are {shape[1]}x{shape[0]}; "
                                "all images must have one size")
        arrays.append(arr)
        labels.append(label)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.as_tensor(labels, dtype=torch.int64), list(classes))
