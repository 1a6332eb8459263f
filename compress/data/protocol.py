"""The interface every dataset kind offers to training, evaluation and calibration."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

import torch


class EpochBatches(Protocol):
    """Normalized float (x, y) batches on a device; the shuffle order depends only on (seed, epoch)."""

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


@runtime_checkable
class ImageData(Protocol):
    classes: list[str]
    labels: torch.Tensor  # int64, one per image

    @property
    def input_size(self) -> tuple[int, int, int]: ...  # (C, H, W) of a model input

    def __len__(self) -> int: ...

    def subset(self, indices: Iterable[int] | torch.Tensor) -> ImageData: ...

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of [0, 1] pixels (estimated on a seeded sample for a big streamed set)."""
        ...

    def eval_images(self) -> torch.Tensor:
        """uint8 N×C×H×W as evaluation sees them (refused when they would not fit in memory)."""
        ...

    def batches(self, batch_size: int, mean, std, *, train: bool, device="cpu", seed: int = 0,
                channels_last: bool = False, drop_last: bool = False) -> EpochBatches: ...
