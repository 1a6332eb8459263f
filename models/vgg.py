"""VGG for 32x32 inputs as used in the network slimming paper (Liu et al. 2017)."""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn

from ._common import check_num_classes, check_width, init_batchnorm, init_conv_linear, scaled

CfgItem = Union[int, str]

CFGS: dict[int, list[CfgItem]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512],
}


def make_features(cfg: Sequence[CfgItem], width: float = 1.0, in_channels: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(f"VGG cfg entries must be positive ints or 'M', got {item!r}")
        out = scaled(item, width)
        layers += [
            nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        ]
        channels = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Conv-BN-ReLU stacks from a cfg list, then a global average pool and one Linear layer.

    With four 'M' entries a 32x32 input reaches the head at 2x2, which the pool reduces to 1x1 exactly as
    the paper's AvgPool2d(2) does; the global pool also takes larger inputs (48, 64 px, ...).
    """

    def __init__(
        self,
        depth: int | None = 19,
        num_classes: int = 10,
        width: float = 1.0,
        bn_init: float | None = 0.5,
        cfg: Sequence[CfgItem] | None = None,
    ) -> None:
        super().__init__()
        width = check_width(width)
        check_num_classes(num_classes)
        if cfg is None:
            if depth not in CFGS:
                raise ValueError(f"VGG depth must be one of {sorted(CFGS)}, got {depth!r}")
            cfg = CFGS[depth]
        cfg = list(cfg)
        convs = [c for c in cfg if c != "M"]
        if not convs:
            raise ValueError("VGG cfg needs at least one conv entry")
        self.cfg = cfg
        self.features = make_features(cfg, width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(scaled(convs[-1], width), num_classes)
        init_conv_linear(self)
        init_batchnorm(self, bn_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
