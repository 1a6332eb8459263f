"""Pre-activation bottleneck ResNet for 32x32 inputs (He et al. 2016, identity mappings)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ._common import add_preactivation_head, check_arguments, check_depth_form, preactivation_head, scaled

EXPANSION = 4
# The deepest network of the identity-mappings paper (He et al. 2016): ResNet-1001.
MAX_DEPTH = 1001


def check_depth(depth: int) -> int:
    """Blocks per stage for a depth of the form 9n+2 (three stages of n three-layer blocks)."""
    return check_depth_form("preresnet", depth, 9, 2, "11, 20, 56, 164, ...", MAX_DEPTH)


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3(stride), BN-ReLU-conv1x1, plus the identity or a projection."""

    def __init__(self, in_planes: int, planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class PreResNet(nn.Module):
    def __init__(
        self,
        depth: int = 164,
        num_classes: int = 10,
        width: float = 1.0,
        bn_init: float | None = 0.5,
    ) -> None:
        super().__init__()
        n, width = check_arguments(check_depth, depth, width, num_classes)
        self.depth = depth
        stem = scaled(16, width)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, padding=1, bias=False)
        channels = stem
        stages = []
        for base, stride in ((16, 1), (32, 2), (64, 2)):
            planes = scaled(base, width)
            out_planes = planes * EXPANSION
            blocks = []
            for i in range(n):
                blocks.append(Bottleneck(channels, planes, out_planes, stride if i == 0 else 1))
                channels = out_planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        add_preactivation_head(self, channels, num_classes, bn_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return preactivation_head(self, x)
