"""DenseNet for 32x32 inputs (Huang et al. 2017) as in the network slimming paper's DenseNet-40."""

from __future__ import annotations

import torch
import torch.nn as nn

from ._common import add_preactivation_head, check_arguments, check_depth_form, preactivation_head, scaled


# Four times the deepest DenseNet of the paper (DenseNet-BC 250); a growth rate beyond any published one.
MAX_DEPTH = 1000
MAX_GROWTH_RATE = 1024


def check_depth(depth: int) -> int:
    """Layers per dense block for a depth of the form 3n+4."""
    return check_depth_form("densenet", depth, 3, 4, "7, 40, 100, ...", MAX_DEPTH)


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing `growth` channels, appended to its input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # not in-place: x is kept for the concatenation
        new = self.conv(torch.relu(self.bn(x)))
        return torch.cat([x, new], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 then AvgPool2d(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(nn.Module):
    """Three dense blocks; the stem has 2*growth channels and transitions keep the width
    (compression 1.0)."""

    def __init__(
        self,
        depth: int = 40,
        num_classes: int = 10,
        growth_rate: int = 12,
        width: float = 1.0,
        bn_init: float | None = 0.5,
    ) -> None:
        super().__init__()
        n, width = check_arguments(check_depth, depth, width, num_classes)
        if isinstance(growth_rate, bool) or not isinstance(growth_rate, int) or growth_rate < 1:
            raise ValueError(f"growth_rate must be a positive integer, got {growth_rate!r:.40}")
        if growth_rate > MAX_GROWTH_RATE:
            raise ValueError(f"growth_rate {growth_rate} is beyond the bound of {MAX_GROWTH_RATE}")
        self.depth = depth
        growth = scaled(growth_rate, width)
        channels = scaled(2 * growth_rate, width)
        self.conv1 = nn.Conv2d(3, channels, kernel_size=3, padding=1, bias=False)
        blocks, transitions = [], []
        for stage in range(3):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            blocks.append(nn.Sequential(*layers))
            if stage < 2:
                transitions.append(Transition(channels, channels))
        self.dense1, self.dense2, self.dense3 = blocks
        self.trans1, self.trans2 = transitions
        add_preactivation_head(self, channels, num_classes, bn_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = self.dense3(x)
        return preactivation_head(self, x)
