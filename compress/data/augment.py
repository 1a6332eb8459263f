"""Whole-batch augmentation and normalization as tensor ops (on the training device), no per-image Python."""

from __future__ import annotations

import math

import torch

from compress.data.sizing import RRC_RATIO, RRC_SCALE


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (or float 0..255) N×C×H×W → float32 standardized with per-channel statistics of [0, 1] pixels."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def augment_crop_flip(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad-and-random-crop plus horizontal flip for a whole uint8 batch, without per-image Python."""
    n, _c, h, w = images.shape
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


def random_resized_crop_flip(images: torch.Tensor, size: tuple[int, int],
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Random-resized crop (scale 0.08–1, aspect 3/4–4/3) plus horizontal flip for a whole uint8 batch.

    One `roi_align` call resamples every image's own random box to `size`; it averages several samples
    per output pixel when a box is larger than the output, so downscaling does not alias. Returns float
    pixels in 0..255 (rounding back to uint8 would only lose precision before normalization).
    """
    from torchvision.ops import roi_align

    n, _, h, w = images.shape
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
    dev = images.device
    out = roi_align(images.float(), boxes.to(dev), output_size=size, spatial_scale=1.0,
                    sampling_ratio=-1, aligned=True)
    return torch.where(flip.to(dev)[:, None, None, None], out.flip(3), out)


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
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
