"""Parameter and MAC counts of a torch model, by the same rules the ONNX counter in runtime/ uses."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size=(3, 32, 32)) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one image (BN, activations, pools excluded)."""
    total = 0

    def conv_hook(mod: nn.Conv2d, _inp, out):
        nonlocal total
        kh, kw = mod.kernel_size
        total += out.shape[1] * (mod.in_channels // mod.groups) * kh * kw * out.shape[2] * out.shape[3]

    def linear_hook(mod: nn.Linear, _inp, out):
        nonlocal total
        total += mod.in_features * mod.out_features * (out.numel() // out.shape[-1] // out.shape[0])

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return int(total)


def count_params_macs(model: nn.Module, input_size=(3, 32, 32)) -> tuple[int, int]:
    return count_params(model), count_macs(model, input_size)


def layer_widths(model: nn.Module) -> dict[str, dict]:
    """Shape-defining attributes of every Conv2d, BatchNorm2d and Linear (and their subclasses, whose entry
    also names their class), keyed by module name. A BN pruned by consumer-side selection is recorded with
    its input width and selected channels. See compress.widths."""
    from compress.widths import layer_spec

    widths = {}
    for name, m in model.named_modules():
        spec = layer_spec(m)
        if spec is not None:
            widths[name] = spec
    return widths
