"""The streaming path: images read and transformed per item by DataLoader workers, for data too big to hold.

Items come from files (a folder or an archive) or from a user's torch Dataset. Workers run torchvision
transforms v2 per image; the main process only normalizes whole batches on the device. Shuffle order
and every image's augmentation are drawn from (seed, epoch), so a resumed run sees the same batches
whichever worker happens to load an image.
"""

from __future__ import annotations

import os
import sys

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, get_worker_info

from compress.data.augment import channel_stats_of, normalize
from compress.data.decode import decode_image
from compress.data.fits import check_fits_memory
from compress.data.memory import check_batch_size, epoch_generator
from compress.data.sizing import (
    RRC_RATIO,
    RRC_SCALE,
    center_crop,
    pad_for,
    storage_side,
    to_storage,
    uses_random_resized_crop,
)
from compress import environment
from compress.errors import CompressError
from compress.limits import available_memory

STATS_SAMPLE = 3000  # images drawn to estimate channel statistics of a streamed set


def default_workers() -> int:
    forced = environment.workers()
    return min(8, len(os.sched_getaffinity(0))) if forced is None else forced


class FileItems:
    """Decoded images from a source's reader (a folder or an archive)."""

    def __init__(self, reader, at_least: int | None):
        self.reader, self.at_least = reader, at_least

    def load(self, i: int) -> torch.Tensor:
        return decode_image(self.reader.read(i), self.reader.name(i), at_least=self.at_least)

    def name(self, i: int) -> str:
        return self.reader.name(i)


class ItemTransform:
    """One image (uint8 3×H×W, any size) → the model input, for evaluation or training."""

    def __init__(self, side: int | None, own_hw: tuple[int, int], train: bool):
        from torchvision.transforms import v2

        self.side, self.own_hw, self.train = side, own_hw, train
        h, w = (side, side) if side is not None else own_hw
        self.out_hw = (h, w)
        if not train:
            self.augment = None
        elif uses_random_resized_crop(h, w):
            self.augment = v2.Compose([v2.RandomResizedCrop((h, w), scale=RRC_SCALE, ratio=RRC_RATIO, antialias=True),
                                       v2.RandomHorizontalFlip()])
        else:
            self.augment = v2.Compose([v2.RandomCrop((h, w), padding=pad_for(h, w)), v2.RandomHorizontalFlip()])

    def __call__(self, image: torch.Tensor, name: str) -> torch.Tensor:
        if self.side is None:
            if tuple(image.shape[1:]) != self.own_hw:
                raise CompressError(f"{name} is {image.shape[2]}x{image.shape[1]}, others are "
                                    f"{self.own_hw[1]}x{self.own_hw[0]}; pass input_size (CLI: --input-size) "
                                    "to resize them all")
            return self.augment(image) if self.augment is not None else image
        if self.augment is not None and uses_random_resized_crop(*self.out_hw):
            return self.augment(image)  # straight from the full image, as torchvision does
        stored = to_storage(image, storage_side(self.side))
        image = center_crop(stored, self.side, self.side).contiguous()
        return self.augment(image) if self.augment is not None else image


class _View(torch.utils.data.Dataset):
    """What a DataLoader worker sees: keys are (position, augmentation seed or None)."""

    def __init__(self, items, indices: torch.Tensor, labels: torch.Tensor, transform: ItemTransform):
        self.items, self.transform = items, transform
        self.indices, self.labels = indices.tolist(), labels.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        pos, aug_seed = key if isinstance(key, tuple) else (key, None)
        i = self.indices[pos]
        image = self.items.load(i)
        if aug_seed is None:
            return self.transform(image, self.items.name(i)), self.labels[pos]
        # transforms v2 draw from the default CPU generator. Seeding only that one: torch.manual_seed
        # would also queue CUDA/MPS seeding, recording a stack trace per call (a third of the item cost).
        gen = torch.default_generator
        saved = gen.get_state() if get_worker_info() is None else None
        gen.manual_seed(aug_seed)
        try:
            out = self.transform(image, self.items.name(i))
        finally:
            if saved is not None:  # loading in the training process itself: leave its random stream as it was
                gen.set_state(saved)
        return out, self.labels[pos]


class _EpochSampler(Sampler):
    def __init__(self, n: int, seed: int, shuffle: bool):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            yield from ((i, None) for i in range(self.n))
            return
        gen = epoch_generator(self.seed, self.epoch)
        order = torch.randperm(self.n, generator=gen)  # the same order as the in-memory path
        seeds = torch.randint(0, 2 ** 62, (self.n,), generator=gen)
        yield from zip(order.tolist(), seeds.tolist())


def _worker_init(_):
    # Workers share the CPU with training; one thread each avoids oversubscription.
    torch.set_num_threads(1)


def _one_line(exc: CompressError) -> CompressError:
    """A worker's CompressError arrives wrapped in its traceback; keep the message line only."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else str(exc)
    prefix = "compress.errors.CompressError: "
    return CompressError(last.removeprefix(prefix))


def _loader(data: StreamSet, batch_size: int, *, train: bool, seed: int, drop_last: bool, pin: bool):
    transform = ItemTransform(data.side, data.own_hw, train)
    view = _View(data.items, data.indices, data.labels, transform)
    sampler = _EpochSampler(len(view), seed, shuffle=train)
    batch_sampler = BatchSampler(sampler, batch_size, drop_last)
    workers = data.workers
    loader = DataLoader(view, batch_sampler=batch_sampler, num_workers=workers, pin_memory=pin,
                        worker_init_fn=_worker_init if workers else None,
                        persistent_workers=bool(workers) and train, prefetch_factor=4 if workers else None)
    return loader, sampler, batch_sampler


def _iterate(loader):
    try:
        yield from loader
    except CompressError as exc:
        raise _one_line(exc) from None


class StreamBatches:
    """Normalized float batches on `device` from DataLoader workers; same interface as `Batches`."""

    def __init__(self, data: StreamSet, batch_size: int, mean, std, *, train: bool, device="cpu",
                 seed: int = 0, channels_last: bool = False, drop_last: bool = False):
        self.device = torch.device(device)
        # On the device once, not copied there with every batch.
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(self.device)
        self.channels_last = channels_last
        self.loader, self.sampler, self.batch_sampler = _loader(
            data, check_batch_size(batch_size), train=train, seed=seed, drop_last=drop_last,
            pin=self.device.type == "cuda")

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def __iter__(self):
        for x, y in _iterate(self.loader):
            x = normalize(x.to(self.device, non_blocking=True), self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)


class StreamSet:
    """A dataset read from disk (or a torch Dataset) item by item; satisfies the same protocol as ImageSet."""

    def __init__(self, items, labels: torch.Tensor, classes: list[str], side: int | None, *,
                 indices: torch.Tensor | None = None, workers: int | None = None,
                 own_hw: tuple[int, int] | None = None, description: str = "data"):
        self.items = items
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.classes = list(classes)
        self.side = side
        self.indices = torch.arange(len(self.labels)) if indices is None else torch.as_tensor(indices)
        if len(self.indices) != len(self.labels):
            raise CompressError(f"{description}: {len(self.indices)} indices for {len(self.labels)} labels")
        self.workers = default_workers() if workers is None else workers
        self.description = description
        if own_hw is None and side is None and len(self.indices):
            own_hw = tuple(int(s) for s in self.items.load(int(self.indices[0])).shape[1:])
        self.own_hw = own_hw

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def input_size(self) -> tuple[int, int, int]:
        h, w = (self.side, self.side) if self.side is not None else self.own_hw
        return (3, h, w)

    def subset(self, indices) -> StreamSet:
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return StreamSet(self.items, self.labels[indices], self.classes, self.side, indices=self.indices[indices],
                         workers=self.workers, own_hw=self.own_hw, description=self.description)

    def batches(self, batch_size: int, mean, std, *, train: bool, device="cpu", seed: int = 0,
                channels_last: bool = False, drop_last: bool = False) -> StreamBatches:
        return StreamBatches(self, batch_size, mean, std, train=train, device=device, seed=seed,
                             channels_last=channels_last, drop_last=drop_last)

    def _uint8_chunks(self, batch_size: int = 256):
        loader, _, _ = _loader(self, batch_size, train=False, seed=0, drop_last=False, pin=False)
        for x, _ in _iterate(loader):
            yield x

    def eval_images(self) -> torch.Tensor:
        """Every image as evaluation sees it, in one uint8 tensor; refused when it would not fit in memory."""
        c, h, w = self.input_size
        check_fits_memory(len(self) * c * h * w, f"{self.description} ({len(self)} images)", available_memory())
        return torch.cat(list(self._uint8_chunks())) if len(self) else torch.empty(0, c, h, w, dtype=torch.uint8)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of [0, 1] pixels; on a seeded sample of STATS_SAMPLE images when larger."""
        data = self
        if len(self) > STATS_SAMPLE:
            pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE]
            data = self.subset(pick.sort().values)
            print(f"data: channel statistics of {self.description} estimated on a seeded sample of "
                  f"{STATS_SAMPLE} of {len(self)} images", file=sys.stderr, flush=True)
        return channel_stats_of(data._uint8_chunks())
