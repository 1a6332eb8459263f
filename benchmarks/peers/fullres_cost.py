"""Prototype for the ablation: the cost-aware importance, applied only where the network runs at full
resolution.

At equal MACs the default (|γ| alone) keeps the second 32×32-pixel convolution of VGG-19 ×0.25 whole (16
channels) and twice the peers' MACs in the 32×32 and 16×16 stages, which the CPU runtimes run at 39–72
GMAC/s against 85–92 for the 4×4 MACs the peers keep instead (results/quick_2026-12-07_avx2). Dividing
every channel's |γ| by its cost (`importance="cost"`) moves MACs out of those stages but cost 2.1 pp of
accuracy, since it also thins the narrow middle layers. This importance divides by the cost only for the
channels made by a full-resolution convolution (the largest output height × width in the network):

    score = |γ| / (c / c̄)^p   for those channels,   |γ| elsewhere

where c is the MACs a channel's convolutions spend on it (made and read), c̄ is that figure for the
network's mean convolution channel, and p is 1 (variant `fullres`) or 1/2 (`fullres-sqrt`, half the pull
on a log scale, between the default's accuracy and `fullres`'s speed). It lives in the benchmark, not in compress/, until it is measured.
"""

from __future__ import annotations

import math

from torch import nn


def channel_cost(layer, positions: dict) -> float:
    """MACs per channel of one layer a unit touches: the convolution's work on one of its output channels
    ("out") or one of its input channels ("in"); zero for a BN or a layer that is not a convolution."""
    m = layer.module
    if layer.role == "bn" or not isinstance(m, nn.Conv2d) or layer.name not in positions:
        return 0.0
    per_position = math.prod(m.kernel_size) * positions[layer.name]
    return per_position * (m.in_channels // m.groups if layer.role == "out" else m.out_channels // m.groups)


def importance(model: nn.Module, input_size, power: float = 1.0):
    """The callable importance (compress.slimming.importance) for `model` at `input_size` (C, H, W), the
    cost raised to `power`."""
    from common import conv_positions

    positions = conv_positions(model, input_size)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n in positions}
    full = max(positions.values())
    # Each MAC is spent on the channel a convolution makes and on the one it reads, so the channels made
    # share twice the MACs between them.
    macs = sum(math.prod(m.kernel_size) * positions[n] * m.in_channels // m.groups * m.out_channels
               for n, m in convs.items())
    mean = 2 * macs / sum(m.out_channels for m in convs.values())

    def fullres_cost(unit):
        makers = [x for x in unit.layers if x.role == "out" and positions.get(x.name) == full]
        if not makers:
            return unit.gamma
        cost = sum(channel_cost(x, positions) for x in unit.layers)
        return unit.gamma / max(cost / mean, 1e-6) ** power

    return fullres_cost
