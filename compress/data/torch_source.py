"""A user's torch Dataset (or DataLoader) as a compress dataset, streamed through the same workers."""

from __future__ import annotations

import sys

import numpy as np
import torch

from compress.data.sizing import check_input_size
from compress.data.stream import StreamSet
from compress.errors import CompressError


def to_uint8_rgb(image, name: str) -> torch.Tensor:
    """PIL image, numpy H×W(×C) array, or C×H×W tensor (uint8, or float in [0, 1]) → uint8 3×H×W."""
    from PIL import Image

    if isinstance(image, Image.Image):
        from compress.data.decode import _to_rgb

        return torch.from_numpy(np.asarray(_to_rgb(image), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    if isinstance(image, np.ndarray):
        arr = image[:, :, None] if image.ndim == 2 else image
        if arr.ndim != 3:
            raise CompressError(f"{name}: expected an H×W×C image array, got shape {list(image.shape)}")
        image = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise CompressError(f"{name}: expected a PIL image, a numpy array or a tensor, got {type(image).__name__}")
    x = image.unsqueeze(0) if image.dim() == 2 else image
    if x.dim() != 3 or x.shape[0] not in (1, 3, 4):
        raise CompressError(f"{name}: expected a C×H×W image with 1, 3 or 4 channels, got shape {list(image.shape)}")
    if x.is_floating_point():
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise CompressError(f"{name}: float pixels must lie in [0, 1] (found {lo:.3g}..{hi:.3g}); "
                                "give images before normalization: compress normalizes them itself")
        x = (x * 255).round().clamp(0, 255).to(torch.uint8)
    elif x.dtype != torch.uint8:
        raise CompressError(f"{name}: pixels must be uint8 or float in [0, 1], got {x.dtype}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x[:3].contiguous()


class TorchItems:
    def __init__(self, dataset):
        self.dataset = dataset

    def load(self, i: int) -> torch.Tensor:
        item = self.dataset[i]
        return to_uint8_rgb(item[0] if isinstance(item, (tuple, list)) else item, self.name(i))

    def name(self, i: int) -> str:
        return f"{type(self.dataset).__name__}[{i}]"


def _labels_of(dataset, n: int) -> torch.Tensor:
    from torch.utils.data import Subset

    # `targets` are the labels before the dataset's target_transform: where one is set, the labels are
    # what the items return, read from them (a permutation of `targets` would pass silently otherwise).
    inner = dataset.dataset if isinstance(dataset, Subset) else None
    transformed = getattr(dataset, "target_transform", None) is not None or \
        getattr(inner, "target_transform", None) is not None
    targets = None if transformed else getattr(dataset, "targets", None)
    if targets is None and not transformed and inner is not None and getattr(inner, "targets", None) is not None:
        targets = torch.as_tensor(inner.targets)[torch.as_tensor(dataset.indices)]
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.int64).flatten()
    print(f"data: reading every item of {type(dataset).__name__} once for its labels "
          "(pass labels= or give the dataset a `targets` attribute to skip this)", file=sys.stderr, flush=True)
    labels = []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise CompressError(f"{type(dataset).__name__}[{i}] is not an (image, label) pair")
        labels.append(int(item[1]))
    return torch.as_tensor(labels, dtype=torch.int64)


def from_torch(dataset, *, classes=None, input_size: int | None = None, labels=None,
               workers: int | None = None) -> StreamSet:
    """Wrap a map-style torch Dataset of (image, label) pairs, or a DataLoader over one.

    Images are PIL images, H×W×C arrays or C×H×W tensors (uint8 or float in [0, 1]) before any
    normalization; compress resizes, augments and normalizes them like a folder's images. A DataLoader
    contributes its dataset and worker count: batching and shuffling stay compress's own, so the order
    depends only on (seed, epoch) and a resumed run is reproducible.
    """
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(dataset, DataLoader):
        if workers is None:
            workers = dataset.num_workers
        dataset = dataset.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise CompressError(f"{type(dataset).__name__} is not a map-style Dataset (with __len__ and __getitem__)")
    side = check_input_size(input_size)
    n = len(dataset)
    if n == 0:
        raise CompressError(f"{type(dataset).__name__} has no items")
    if classes is None:
        classes = getattr(dataset, "classes", None)
        if classes is None:
            raise CompressError(f"{type(dataset).__name__} has no `classes` attribute; pass classes=[...]")
    classes = [str(c) for c in classes]
    labels = _labels_of(dataset, n) if labels is None else torch.as_tensor(labels, dtype=torch.int64).flatten()
    if len(labels) != n:
        raise CompressError(f"{len(labels)} labels for {n} items of {type(dataset).__name__}")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise CompressError(f"labels of {type(dataset).__name__} span {int(labels.min())}..{int(labels.max())}, "
                            f"but there are {len(classes)} classes")
    return StreamSet(TorchItems(dataset), labels, classes, side, workers=workers,
                     description=type(dataset).__name__)
