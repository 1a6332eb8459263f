"""The in-memory path: images decoded once into one uint8 tensor, augmented as whole-batch tensor ops."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from compress.data.augment import (
    apply_crop_flip,
    apply_resized_crop,
    channel_stats_of,
    draw_crop_flip,
    draw_resized_crop,
    normalize,
)
from compress.data.sizing import center_crop, pad_for, uses_random_resized_crop
from compress.errors import CompressError


@dataclass
class ImageSet:
    """Decoded images in memory.

    `stored` holds every image at one storage size; `crop` (when set) is the side of the model input,
    smaller than the stored square by the evaluation resize margin (see compress.data.sizing).
    """

    stored: torch.Tensor  # uint8, N x C x S x S (or the data's own H x W)
    labels: torch.Tensor  # int64, N
    classes: list[str]
    crop: int | None = None
    # Copies of `stored` and `labels` on accelerators, made once (training and every evaluation share them).
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def images(self) -> torch.Tensor:
        """uint8 N×C×H×W as evaluation sees them (a view of the stored images)."""
        if self.crop is None:
            return self.stored
        return center_crop(self.stored, self.crop, self.crop)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]

    def eval_images(self) -> torch.Tensor:
        return self.images

    def on(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(stored, labels) on `device`: the images themselves on a CPU, a copy kept for reuse elsewhere."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.stored, self.labels
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.stored.to(device), self.labels.to(device))
        return self._on_device[key]

    def subset(self, indices) -> ImageSet:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ImageSet(self.stored[indices], self.labels[indices], self.classes, self.crop)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the images scaled to [0, 1]."""
        return channel_stats_of(self.images.split(4096))

    def batches(self, batch_size: int, mean, std, *, train: bool, device="cpu", seed: int = 0,
                channels_last: bool = False, drop_last: bool = False) -> Batches:
        return Batches(self, batch_size, mean, std, train=train, device=device, seed=seed,
                       channels_last=channels_last, drop_last=drop_last)


MAX_SEED = 2 ** 63 - 1


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise CompressError(f"seed (--seed) must be a whole number in [0, 2**63 - 1], got {seed!r}")
    return seed


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The one random stream of an epoch: shuffle order first, then augmentation."""
    # Modulo 2**64, the range a generator seed takes: a no-op for every seed below about 1.8e14.
    return torch.Generator().manual_seed((seed * 100_003 + epoch) % 2 ** 64)


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CompressError(f"batch size must be a positive whole number, got {batch_size!r}")
    return batch_size


class Batches:
    """Iterate over an ImageSet in batches of normalized float tensors on `device`.

    Shuffling and augmentation depend only on (seed, epoch), so a resumed run sees the same order it would
    have seen. The uint8 images live on `device` (copied once per ImageSet); each epoch's random choices are
    drawn on the CPU up front and sent in one copy, so a batch costs no host work beyond launching kernels.
    """

    def __init__(self, data: ImageSet, batch_size: int, mean, std, *, train: bool, device="cpu",
                 seed: int = 0, channels_last: bool = False, drop_last: bool = False):
        self.data = data
        self.batch_size = check_batch_size(batch_size)
        self.device = torch.device(device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(self.device)
        self.train = train
        self.seed = check_seed(seed)
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.epoch = 0
        # Four times smaller than floats, and augmentation then runs on the device too.
        self.stored, self.labels = data.on(self.device)
        self.images = ImageSet(self.stored, self.labels, data.classes, data.crop).images
        h, w = self.images.shape[-2:]
        self.random_resized = uses_random_resized_crop(h, w)
        self.pad = pad_for(h, w)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _slices(self):
        n = len(self.data)
        return [slice(b * self.batch_size, min(n, (b + 1) * self.batch_size)) for b in range(len(self))]

    def _draws(self, gen: torch.Generator, slices) -> list[torch.Tensor]:
        """Every batch's random choices, in the order the batches would draw them, concatenated on the device."""
        h, w = self.stored.shape[-2:]
        per_batch = [draw_resized_crop(sl.stop - sl.start, h, w, gen) if self.random_resized
                     else draw_crop_flip(sl.stop - sl.start, self.pad, gen) for sl in slices]
        return [torch.cat(parts).to(self.device) for parts in zip(*per_batch)] if per_batch else []

    def __iter__(self):
        gen = epoch_generator(self.seed, self.epoch)
        slices = self._slices()
        order = draws = None
        if self.train:
            order = torch.randperm(len(self.data), generator=gen).to(self.device)
            draws = self._draws(gen, slices)
        for sl in slices:
            if order is None:
                x, y = self.images[sl], self.labels[sl]
            else:
                idx = order[sl]
                picked = [d[sl] for d in draws]
                if self.random_resized:
                    x = apply_resized_crop(self.stored[idx], *picked, tuple(self.images.shape[-2:]))
                else:
                    x = apply_crop_flip(self.images[idx], *picked, pad=self.pad)
                y = self.labels[idx]
            x = normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def stratified_indices(labels: torch.Tensor, limit: int, seed: int = 0) -> torch.Tensor:
    """Indices of `limit` items with classes as balanced as the labels allow, reproducibly for a seed."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise CompressError(f"limit must be a positive whole number, got {limit!r}")
    check_seed(seed)
    n = int(labels.numel())
    if limit >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    shuffled = labels[order]
    # Rank each item within its class in shuffled order; taking the lowest ranks first
    # interleaves classes, so any prefix is as balanced as possible.
    rank = torch.empty_like(shuffled)
    for c in shuffled.unique():
        members = (shuffled == c).nonzero().flatten()
        rank[members] = torch.arange(members.numel())
    key = rank * (n + 1) + torch.arange(n)
    return order[key.argsort()[:limit]].sort().values


def stratified_subset(data, limit: int, seed: int = 0):
    """Pick `limit` images of any dataset kind with balanced classes, reproducibly for a seed."""
    if limit >= len(data):
        stratified_indices(data.labels, limit, seed)  # still validates `limit`
        return data
    return data.subset(stratified_indices(data.labels, limit, seed))
