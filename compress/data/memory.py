"""The in-memory path: images decoded once into one uint8 tensor, augmented as whole-batch tensor ops."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.data.augment import augment_crop_flip, channel_stats_of, normalize, random_resized_crop_flip
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


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The one random stream of an epoch: shuffle order first, then augmentation."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CompressError(f"batch size must be a positive whole number, got {batch_size!r}")
    return batch_size


class Batches:
    """Iterate over an ImageSet in batches of normalized float tensors on `device`.

    Shuffling depends only on (seed, epoch), so a resumed run sees the same order it would have seen.
    """

    def __init__(self, data: ImageSet, batch_size: int, mean, std, *, train: bool, device="cpu",
                 seed: int = 0, channels_last: bool = False, drop_last: bool = False):
        self.data = data
        self.batch_size = check_batch_size(batch_size)
        self.mean, self.std = mean, std
        self.train = train
        self.device = torch.device(device)
        self.seed = seed
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.epoch = 0
        # Keep the uint8 images on the training device: four times smaller than floats and
        # augmentation then runs there too.
        self.stored = data.stored.to(self.device)
        self.labels = data.labels.to(self.device)
        self.images = ImageSet(self.stored, self.labels, data.classes, data.crop).images
        h, w = self.images.shape[-2:]
        self.random_resized = uses_random_resized_crop(h, w)
        self.pad = pad_for(h, w)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        n = len(self.data)
        gen = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(n, generator=gen).to(self.device) if self.train else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            if order is None:
                x, y = self.images[sl], self.labels[sl]
            elif self.random_resized:
                idx = order[sl]
                x, y = random_resized_crop_flip(self.stored[idx], tuple(self.images.shape[-2:]), gen), self.labels[idx]
            else:
                idx = order[sl]
                x, y = augment_crop_flip(self.images[idx], pad=self.pad, generator=gen), self.labels[idx]
            x = normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def stratified_indices(labels: torch.Tensor, limit: int, seed: int = 0) -> torch.Tensor:
    """Indices of `limit` items with classes as balanced as the labels allow, reproducibly for a seed."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise CompressError(f"limit must be a positive whole number, got {limit!r}")
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
