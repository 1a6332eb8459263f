"""Whole-batch augmentation and normalization as tensor ops (on the training device), no per-image Python.

Each augmentation is split in two: `draw_*` makes the random choices on the CPU from a seeded generator
(so a run is reproducible on any device), `apply_*` carries them out on the images' device.
"""

from __future__ import annotations

import math

import torch

from compress.data.sizing import RRC_RATIO, RRC_SCALE
from compress.errors import CompressError


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (or float 0..255) N×C×H×W → float32 standardized with per-channel statistics of [0, 1] pixels."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def draw_crop_flip(n: int, pad: int, generator: torch.Generator | None = None):
    """The random part of pad-crop-flip for `n` images, drawn on the CPU: (row offsets, column offsets, flips)."""
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return oy, ox, flip


def apply_crop_flip(images: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor,
                    pad: int) -> torch.Tensor:
    """Pad-and-crop at the given offsets, flipped where asked, as one gather on the images' device.

    The result is channels_last in memory (the gather runs in N×H×W×C), which is what training uses.
    """
    n, _c, h, w = images.shape
    dev = images.device
    oy, ox, flip = oy.to(dev), ox.to(dev), flip.to(dev)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=dev)[None, :]
    cols = ox[:, None] + torch.arange(w, device=dev)[None, :]
    # A flipped crop reads its columns right to left.
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_idx = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch_idx, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def augment_crop_flip(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad-and-random-crop plus horizontal flip for a whole uint8 batch, without per-image Python."""
    return apply_crop_flip(images, *draw_crop_flip(images.shape[0], pad, generator), pad=pad)


def draw_resized_crop(n: int, h: int, w: int, generator: torch.Generator | None = None):
    """The random part of random-resized-crop-flip for `n` images of h×w, drawn on the CPU: (boxes, flips).

    Boxes are N×5 (image index, x0, y0, x1, y1) as `roi_align` takes them.
    """
    area = torch.empty(n).uniform_(*RRC_SCALE, generator=generator) * (h * w)
    log_ratio = torch.empty(n).uniform_(math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]), generator=generator)
    ratio = log_ratio.exp()
    # torchvision retries boxes that do not fit; clamping keeps the batch vectorized and lands on
    # the same full-image fallback for the rare extreme draws.
    bw = (area * ratio).sqrt().clamp(max=w)
    bh = (area / ratio).sqrt().clamp(max=h)
    x0 = torch.rand(n, generator=generator) * (w - bw)
    y0 = torch.rand(n, generator=generator) * (h - bh)
    flip = torch.rand(n, generator=generator) < 0.5
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), x0, y0, x0 + bw, y0 + bh], dim=1)
    return boxes, flip


def apply_resized_crop(images: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor,
                       size: tuple[int, int]) -> torch.Tensor:
    """Resample each image's box to `size` (one `roi_align` call on the images' device), flipped where asked."""
    from torchvision.ops import roi_align

    dev = images.device
    out = roi_align(images.float(), boxes.to(dev), output_size=size, spatial_scale=1.0,
                    sampling_ratio=-1, aligned=True)
    return torch.where(flip.to(dev)[:, None, None, None], out.flip(3), out)


def random_resized_crop_flip(images: torch.Tensor, size: tuple[int, int],
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-resized crop (scale 0.08–1, aspect 3/4–4/3) plus horizontal flip for a whole uint8 batch.

    One `roi_align` call resamples every image's own random box to `size`; it averages several samples
    per output pixel when a box is larger than the output, so downscaling does not alias. Returns float
    pixels in 0..255 (rounding back to uint8 would only lose precision before normalization).
    """
    n, _, h, w = images.shape
    return apply_resized_crop(images, *draw_resized_crop(n, h, w, generator), size)


def channel_stats_of(chunks) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 N×C×H×W chunks scaled to [0, 1]."""
    total = squares = None
    n = 0
    # float64 sums chunk by chunk: a float64 copy of a whole training set would need gigabytes.
    for chunk in chunks:
        x = chunk.to(torch.float64).div_(255.0)
        if total is None:
            total = torch.zeros(x.shape[1], dtype=torch.float64)
            squares = torch.zeros_like(total)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
        n += x.numel() // x.shape[1]
    mean = total / n
    std = ((squares - n * mean.square()) / max(n - 1, 1)).clamp_min(0).sqrt()
    # Under 1/255 (one grey level) a channel is constant in effect: dividing by its spread would make the
    # inputs non-finite, and training would stop with a NaN loss that names the wrong cause.
    flat = next((c for c, v in enumerate(std.tolist()) if v < 1 / 255), None)
    if flat is not None:
        raise CompressError(f"channel {flat} of the training images is constant (std {float(std[flat]):.2g}), so "
                            "normalizing by it is undefined and training would end in a NaN loss; check the images")
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
