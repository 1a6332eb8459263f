"""`load_dataset`: a data spec and a split → an in-memory ImageSet or a streamed StreamSet."""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from compress.data.cache import cache_file, load_images, plain_tar_file, remove_stale, save_images, warn
from compress.data.decode import decode_image, image_size
from compress.data.fits import MEMORY_SHARE, check_fits_memory, gb
from compress.data.memory import ImageSet, stratified_indices
from compress.data.sizing import check_input_size, storage_side, to_storage
from compress.data.sources import (
    SPLIT_ALIASES,
    Source,
    archive_fingerprint,
    decompress_to,
    is_compressed,
    list_archive,
    list_folder,
)
from compress.data.stream import FileItems, StreamSet, default_workers
from compress.errors import CompressError, MixedImageSizes
from compress.limits import available_memory, check_seed, regular_file

DATA_ENV = "COMPRESS_DATA"
DATA_DIR_ENV = "COMPRESS_DATA_DIR"
MODES = ("auto", "memory", "stream")


# Names that torchvision downloads itself (never a local folder of that name).
TORCHVISION_SETS = ("cifar10", "cifar100")


def resolve_spec(spec: str) -> str:
    """Map the ``cifar10`` name to the local copy named by COMPRESS_DATA when set."""
    if spec.lower() == "cifar10" and os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV]
    return spec


def load_dataset(spec: str, split: str, limit: int | None = None, seed: int = 0, *,
                 input_size: int | None = None, mode: str = "auto", workers: int | None = None):
    """Load one split of a dataset; `limit` draws a stratified, seeded subset.

    `input_size` N makes every image N×N (see compress.data.sizing); None keeps the data's own size,
    which must then be the same for every image. `mode` is "memory" (decode once into a uint8 cache),
    "stream" (DataLoader workers read files per batch) or "auto" (memory when the decoded images take
    under a quarter of the available RAM; the choice is printed). The torchvision CIFAR copies are
    always held in memory. `workers` sets the DataLoader workers of a streamed set.
    """
    if split not in SPLIT_ALIASES:
        raise CompressError(f"unknown split {split!r}: expected 'train' or 'test'")
    if mode not in MODES:
        raise CompressError(f"unknown data mode {mode!r}: expected one of {', '.join(MODES)}")
    side = check_input_size(input_size)
    check_seed(seed)
    if limit is not None:
        stratified_indices(torch.zeros(1, dtype=torch.int64), limit)  # validates the number early
    source = resolve_spec(spec)
    if source.lower() in TORCHVISION_SETS:
        data = _load_torchvision_cifar(source.lower(), split, side)
        if len(data) == 0:
            raise CompressError(f"dataset {spec!r} has no images in its {split} split")
        return data if limit is None else data.subset(stratified_indices(data.labels, limit, seed))
    path = Path(source).expanduser()
    if not path.exists():
        raise CompressError(f"dataset not found: {path}")
    # A FIFO would block the first read forever and /dev/zero would be read forever.
    regular_file(path, "dataset", directory_ok=True)
    return _load_files(path, split, limit, seed, side, mode, workers)


def _load_files(path: Path, split: str, limit, seed: int, side: int | None, mode: str, workers):
    tag = f"s{storage_side(side)}" if side is not None else "own"
    listing: Source | None = None
    if path.is_dir():
        listing = list_folder(path, split)
        fingerprint = listing.fingerprint
    else:
        fingerprint = archive_fingerprint(path)
    cached_file = cache_file(path, split, tag, fingerprint)
    what = f"{path.name} {split}"

    if mode != "stream" and cached_file.is_file():
        size = cached_file.stat().st_size
        if mode == "memory" or size < MEMORY_SHARE * available_memory():
            cached = load_images(cached_file)
            if cached is not None:
                images, labels, classes = cached
                if mode == "auto":
                    drawn = "" if limit is None else f", {min(limit, len(labels))} drawn"
                    _say(f"data: {what} in memory from the decoded cache ({len(labels)} images, {gb(size)}{drawn})")
                data = ImageSet(images, labels, classes, _crop(side))
                return data if limit is None else data.subset(stratified_indices(labels, limit, seed))

    if listing is None:
        listing = list_archive(path, split)
    if len(listing) == 0:
        raise CompressError(f"{path}: no images found in its {split} split")
    everything = torch.arange(len(listing))
    chosen = everything if limit is None else stratified_indices(listing.labels, limit, seed)
    full_bytes, h, w = _decoded_bytes(listing, side)
    chosen_bytes = full_bytes * len(chosen) // len(listing)
    avail = available_memory()
    if mode == "auto":
        mode = "memory" if chosen_bytes < MEMORY_SHARE * avail else "stream"
        _say(_choice_line(mode, what, len(chosen), h, w, chosen_bytes, avail, workers))
    if mode == "memory":
        if limit is None or full_bytes < MEMORY_SHARE * avail:
            # The whole split is memory-sized: decode it once and cache it; limits are subsets of it.
            check_fits_memory(full_bytes, what, avail)
            data = _decode_all(listing, everything, side, (h, w))
            save_images(cached_file, data.stored, data.labels, data.classes)
            return data if limit is None else data.subset(chosen)
        check_fits_memory(chosen_bytes, what, avail)
        return _decode_all(listing, chosen, side, (h, w))
    if not path.is_dir() and is_compressed(path):
        listing = list_archive(path, split, plain_copy=_plain_copy(path, fingerprint))
    at_least = storage_side(side) if side is not None else None
    data = StreamSet(FileItems(listing.reader, at_least), listing.labels, listing.classes, side,
                     workers=workers, description=what)
    return data if limit is None else data.subset(chosen)


def _crop(side: int | None) -> int | None:
    return side if side is not None and storage_side(side) != side else None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _choice_line(mode: str, what: str, n: int, h: int, w: int, nbytes: int, avail: int, workers) -> str:
    size = f"{n} images of 3x{h}x{w} = {gb(nbytes)} decoded"
    if mode == "memory":
        return f"data: {what} in memory ({size}, under {MEMORY_SHARE:.0%} of {gb(avail)} available RAM)"
    workers = default_workers() if workers is None else workers
    return (f"data: {what} streamed from disk by {workers} DataLoader workers ({size}, over "
            f"{MEMORY_SHARE:.0%} of {gb(avail)} available RAM)")


def _decoded_bytes(listing: Source, side: int | None) -> tuple[int, int, int]:
    """Bytes the whole split takes decoded; at the data's own size, the first image stands for all."""
    if side is not None:
        h = w = storage_side(side)
    else:
        h, w = image_size(listing.reader.read(0), listing.reader.name(0))
    return len(listing) * 3 * h * w, h, w


def _decode_all(listing: Source, chosen: torch.Tensor, side: int | None, hw: tuple[int, int]) -> ImageSet:
    """Decode the chosen images into one buffer of the size whose memory was checked (`hw`, from
    _decoded_bytes): a tar is read in archive order, so its first image decoded need not be the one measured."""
    from tqdm import tqdm

    reader = listing.reader
    s = storage_side(side) if side is not None else None
    slot = {int(i): k for k, i in enumerate(chosen.tolist())}
    out = torch.empty((len(slot), 3, *hw), dtype=torch.uint8)
    filled = 0
    for i, raw in tqdm(reader.read_many(list(slot)), total=len(slot), desc=f"decoding {listing.path.name}",
                       unit="img", leave=False, mininterval=1.0, disable=None):
        try:
            img = decode_image(raw, reader.name(i), at_least=s, size=None if s is not None else hw)
        except MixedImageSizes as exc:
            raise MixedImageSizes(f"{exc}, the size of {reader.name(0)}; pass input_size (CLI: --input-size) "
                                  "to resize all images to one size") from None
        if s is not None:
            img = to_storage(img, s)
        if img.shape != out.shape[1:]:
            raise CompressError(f"{reader.name(i)} decoded to {list(img.shape)}, not {list(out.shape[1:])}")
        out[slot[i]] = img
        filled += 1
    if filled != len(slot):
        raise CompressError(f"{listing.path}: read {filled} of {len(slot)} images; the archive changed while reading")
    return ImageSet(out, listing.labels[chosen], listing.classes, _crop(side))


def _plain_copy(path: Path, fingerprint: str) -> Path:
    """An uncompressed copy of a compressed archive, made once: workers then read members by offset."""
    target = plain_tar_file(path, fingerprint)
    if target.is_file():
        return target
    _say(f"data: decompressing {path} once to {target} so workers can read images in any order")
    try:
        decompress_to(path, target)
        remove_stale(target)
        return target
    except OSError as exc:
        warn(f"cannot write {target} ({exc.strerror or exc}); decompressing to a temporary file instead")
    fd, tmp = tempfile.mkstemp(prefix="compress-", suffix=".tar")
    os.close(fd)
    atexit.register(lambda: Path(tmp).unlink(missing_ok=True))
    try:
        decompress_to(path, Path(tmp))
    except OSError as exc:
        raise CompressError(f"cannot decompress {path} for streaming ({exc.strerror or exc}); "
                            "extract it to a folder or use mode='memory'") from None
    return Path(tmp)


def _load_torchvision_cifar(name: str, split: str, side: int | None) -> ImageSet:
    import torchvision

    from compress.data.cache import cache_dir

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
    if side is not None:
        s = storage_side(side)
        images = torch.cat([to_storage(chunk, s) for chunk in images.split(2048)])
    return ImageSet(images, torch.as_tensor(ds.targets, dtype=torch.int64), list(ds.classes), _crop(side))

