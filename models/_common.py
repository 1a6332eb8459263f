"""Helpers shared by the architecture modules."""

from __future__ import annotations

import math

import torch.nn as nn


def scaled(channels: int, width: float) -> int:
    """A channel count multiplied by `width`, never below one channel."""
    return max(1, int(round(channels * width)))


def check_width(width: float) -> float:
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not (width > 0 and math.isfinite(width)):
        raise ValueError(f"width must be a positive finite number, got {width!r}")
    if width > 64:
        raise ValueError(f"width {width} would multiply every layer's channels by more than 64; "
                         "it is a multiplier such as 0.25, 0.5 or 2")
    return float(width)


def init_batchnorm(model: nn.Module, bn_init: float | None) -> None:
    """Set every BatchNorm γ to `bn_init` and β to 0 (None keeps PyTorch's defaults).

    Network slimming starts γ at 0.5 so the L1 penalty has room to separate channels.
    """
    if bn_init is None:
        return
    if isinstance(bn_init, bool) or not isinstance(bn_init, (int, float)) or not math.isfinite(bn_init):
        raise ValueError(f"bn_init must be a finite number or None, got {bn_init!r}")
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.constant_(module.weight, float(bn_init))
            nn.init.zeros_(module.bias)


def init_conv_linear(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)


def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def check_depth_form(family: str, depth: int, step: int, offset: int, examples: str, bound: int) -> int:
    """n for a depth of the form step*n+offset with 1 <= n and depth <= bound (the family's blocks per stage)."""
    form = f"{step}n+{offset}"
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < step + offset or (depth - offset) % step:
        raise ValueError(f"{family} depth must be {form} with n >= 1 ({examples}), got {depth!r:.40}")
    if depth > bound:
        raise ValueError(f"{family} depth {depth} is beyond the bound of {bound} ({form} with n <= "
                         f"{(bound - offset) // step})")
    return (depth - offset) // step


def check_arguments(depth_of, depth: int, width: float, num_classes: int) -> tuple[int, float]:
    """(blocks per stage from `depth_of(depth)`, the checked width); num_classes checked too."""
    n = depth_of(depth)
    width = check_width(width)
    check_num_classes(num_classes)
    return n, width


def add_preactivation_head(model: nn.Module, channels: int, num_classes: int, bn_init: float | None) -> None:
    """The last BN-ReLU, global pooling and classifier of a pre-activation network (attributes bn, relu,
    avgpool, fc: the names its state dict keys carry), then the initialisation of every layer."""
    model.bn = nn.BatchNorm2d(channels)
    model.relu = nn.ReLU(inplace=True)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.fc = nn.Linear(channels, num_classes)
    init_conv_linear(model)
    init_batchnorm(model, bn_init)


def preactivation_head(model: nn.Module, x):
    return model.fc(model.avgpool(model.relu(model.bn(x))).flatten(1))
