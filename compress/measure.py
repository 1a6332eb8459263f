"""Parameter and MAC counts of a torch model, by the same rules the ONNX counter in runtime/ uses."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size=(3, 32, 32), *, checked: bool = False) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one image (BN, activations, pools excluded).
    `checked`: the caller bounded a forward at this size already (check_forward_memory)."""
    if not checked:
        check_forward_memory(model, input_size)
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


# What a forward holds at once against its largest single output: that output, the input it came from and
# one more (a residual, a BN's output before the ReLU). An estimate to refuse absurd sizes, not a budget.
LIVE_OUTPUTS = 3


def largest_output_bytes(model: nn.Module, input_size) -> int | None:
    """Bytes of the largest tensor any module outputs for one image, from a forward of a copy on the meta
    device (shapes only, nothing allocated); None when the model cannot run there (it reads values)."""
    import copy

    largest = 0

    def hook(_mod, _inp, out):
        nonlocal largest
        for t in out if isinstance(out, (list, tuple)) else out.values() if isinstance(out, dict) else [out]:
            if isinstance(t, torch.Tensor):
                largest = max(largest, t.numel() * t.element_size())

    # A copy, because a forward may cache what it computed (ultralytics' Detect keeps its anchors for the
    # input shape): the model itself must never hold a meta tensor. Its tensors become meta in the copy.
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad) for p in model.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in model.buffers()})
    try:
        shadow = copy.deepcopy(model, memo)
        for m in shadow.modules():
            # the copy would run the model's own hooks (a MAC counter, a user's recorder) on meta tensors
            for hooks in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                          "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
                if isinstance(getattr(m, hooks, None), dict):
                    getattr(m, hooks).clear()
            m.register_forward_hook(hook)
        shadow.eval()
        with torch.no_grad():
            shadow(torch.zeros(1, *input_size, device="meta"))
    except Exception:  # noqa: BLE001 - .item() and other reads of values cannot run on meta tensors
        return None
    return largest


def check_forward_memory(model: nn.Module, input_size, images: int = 1) -> None:
    """Refuse a forward of `images` images whose activations cannot fit in memory (TooLargeError), before it
    runs: a stranger's model.json may give any input size up to MAX_IMAGE_SIDE² (a tiny network at 4096² px
    took 2.3 GB; at 16384² it would take 37 GB)."""
    from compress.limits import check_allocation

    largest = largest_output_bytes(model, input_size)
    if largest is not None:
        size = "x".join(str(d) for d in input_size)
        what = f"one {size} image" if images == 1 else f"{images} {size} images"
        check_allocation(LIVE_OUTPUTS * images * largest, "uint8",
                         f"a forward of {what} (its largest layer output is {largest:,} bytes per image)")


def count_params_macs(model: nn.Module, input_size=(3, 32, 32), *, checked: bool = False) -> tuple[int, int]:
    return count_params(model), count_macs(model, input_size, checked=checked)


def layer_widths(model: nn.Module) -> dict[str, dict]:
    """Shape-defining attributes of every convolution, BatchNorm and Linear (and their subclasses, whose entry
    also names their class), keyed by module name. A BN pruned by consumer-side selection is recorded with
    its input width and selected channels. See compress.widths."""
    from compress.widths import layer_spec

    widths = {}
    for name, m in model.named_modules():
        spec = layer_spec(m)
        if spec is not None:
            widths[name] = spec
    return widths
