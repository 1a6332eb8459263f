"""The decoded-image cache: content-aware keys, and a cache that cannot be written is skipped, not fatal.

A key covers the source's fingerprint (file list, sizes and modification times, or the archive's own size
and time), the split, the storage size and the decoder version. Files of one source are named with a
hash of its path, so a rebuilt cache replaces its stale predecessor without touching other datasets'.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from compress.data.decode import DECODER_VERSION

CACHE_ENV = "COMPRESS_CACHE"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "compress")
    return Path(root)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _stem(path: Path, split: str, storage: str) -> str:
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{path.name}-{where}-{split}-{storage}"


def cache_file(path: Path, split: str, storage: str, fingerprint: str) -> Path:
    key = hashlib.sha256(f"{fingerprint}|{split}|{storage}|decoder{DECODER_VERSION}".encode()).hexdigest()[:20]
    return cache_dir() / f"{_stem(path, split, storage)}-{key}.safetensors"


def load_images(file: Path):
    """(images, labels, classes) from a cache file, or None when there is none or it is unreadable."""
    from safetensors import safe_open

    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as f:
            classes = json.loads(f.metadata()["classes"])
            return f.get_tensor("images"), f.get_tensor("labels"), classes
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
        return None


def save_images(file: Path, images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> bool:
    """Write a cache file atomically and drop stale ones of the same source; False (with a one-line
    warning) when it cannot be written: a full disk or a read-only directory costs speed, not the run."""
    from safetensors.torch import save_file

    from compress.atomic import atomic_path

    try:
        with atomic_path(file) as tmp:
            save_file({"images": images.contiguous(), "labels": labels.contiguous()}, str(tmp),
                      metadata={"classes": json.dumps(classes)})
    except Exception as exc:  # noqa: BLE001 - OSError, or safetensors' own error wrapping one
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        warn(f"cannot write the data cache {file} ({reason}); continuing without a cache")
        return False
    remove_stale(file)
    return True


def remove_stale(file: Path) -> None:
    stem = file.name.rsplit("-", 1)[0]
    for other in file.parent.glob(f"{stem}-*{file.suffix}"):
        if other != file and other.name.rsplit("-", 1)[0] == stem:
            other.unlink(missing_ok=True)


def plain_tar_file(path: Path, fingerprint: str) -> Path:
    """Where an uncompressed copy of a compressed archive lives, for random access while streaming."""
    key = hashlib.sha256(f"{fingerprint}|plain-tar".encode()).hexdigest()[:20]
    return cache_dir() / f"{_stem(path, 'all', 'tar')}-{key}.tar"
