"""How an image of any size becomes a model input of one size, shared by the in-memory and streaming paths.

With an input size N the evaluation transform is: resize the short side to S, center-crop S×S, then
center-crop N×N, where S = N for CIFAR-sized inputs (N < 64) and S = round(N / 0.875) otherwise (the
usual 256 → 224 margin). The in-memory path stores the S×S square, so its evaluation crop and the
streaming path's transform are the same computation on the same pixels.

Training augmentation depends on the input size: pad-crop + flip below 64 px, random-resized-crop +
flip from 64 px up.
"""

from __future__ import annotations

import torch

from compress.errors import CompressError

LARGE_INPUT = 64  # from here up, ImageNet-style resize margins and random-resized crops
CROP_FRACTION = 0.875
MIN_INPUT, MAX_INPUT = 8, 4096
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
# Beyond this ratio of its sides an image is cut to it around its centre before resizing: a 1-pixel-high PNG
# of a few hundred bytes, 400k pixels wide, became a 32 × 12.8M-pixel tensor (4 GB) on its way to a 32×32
# square. The cut keeps far more than the square and the resize filter's reach, and images at or under the
# ratio (every photograph) are resized exactly as before.
MAX_ASPECT = 8


def check_input_size(input_size) -> int | None:
    if input_size is None:
        return None
    if isinstance(input_size, bool) or not isinstance(input_size, int):
        raise CompressError(f"input_size must be a whole number of pixels, got {input_size!r}")
    if not MIN_INPUT <= input_size <= MAX_INPUT:
        raise CompressError(f"input_size must be between {MIN_INPUT} and {MAX_INPUT} pixels, got {input_size}")
    return input_size


def storage_side(input_size: int) -> int:
    """Side of the square kept per image: the input itself for small inputs, with a resize margin above."""
    return input_size if input_size < LARGE_INPUT else round(input_size / CROP_FRACTION)


def uses_random_resized_crop(height: int, width: int) -> bool:
    return min(height, width) >= LARGE_INPUT


def pad_for(height: int, width: int) -> int:
    """Padding of pad-crop augmentation: 4 px at CIFAR's 32 px, scaled with the input."""
    return max(1, round(min(height, width) / 8))


def to_storage(image: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 C×H×W (any size) → uint8 C×side×side: resize the short side to `side`, center-crop."""
    from torchvision.transforms.v2 import functional as TF

    h, w = image.shape[-2:]
    if max(h, w) > MAX_ASPECT * min(h, w):
        image = TF.center_crop(image, [min(h, MAX_ASPECT * w), min(w, MAX_ASPECT * h)])
    image = TF.resize(image, side, antialias=True)
    return TF.center_crop(image, [side, side])


def center_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Center crop of the last two dims, as a view; the offsets match torchvision's center_crop."""
    h, w = images.shape[-2:]
    if (h, w) == (height, width):
        return images
    top, left = round((h - height) / 2.0), round((w - width) / 2.0)
    return images[..., top:top + height, left:left + width]
