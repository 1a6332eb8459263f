"""Physical removal: every layer loses the channels a Removal names, in place, keeping its class.

Each layer is cut once, its inputs and outputs together, with indices in its own numbering before
pruning, so the order of the cuts does not matter. A BatchNorm subclass (timm's BatchNormAct2d) keeps
its class, activation and drop layer. Split sizes kept in module attributes are rewritten.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import CompressError


def _keep(n: int, gone: list[int] | None) -> torch.Tensor | None:
    if not gone:
        return None
    return torch.as_tensor(sorted(set(range(n)) - set(gone)), dtype=torch.long)


def _param(old: nn.Parameter, new: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(new.detach().clone().contiguous(), requires_grad=old.requires_grad)


@torch.no_grad()
def _cut_conv(m: nn.modules.conv._ConvNd, kind: str, out_gone, in_gone) -> None:
    w = m.weight
    if kind == "depthwise":
        keep = _keep(m.out_channels, out_gone)
        if keep is None:
            return
        m.weight = _param(w, w[keep.to(w.device)])
        if m.bias is not None:
            m.bias = _param(m.bias, m.bias[keep.to(w.device)])
        m.in_channels = m.out_channels = m.groups = keep.numel()
        return
    g = m.groups
    out_keep = _keep(m.out_channels, out_gone)
    new = w if out_keep is None else w[out_keep.to(w.device)]
    per_group_in = m.in_channels // g
    in_keep = _keep(per_group_in, [i for i in (in_gone or []) if i < per_group_in]) if g > 1 else \
        _keep(m.in_channels, in_gone)
    if in_keep is not None:
        new = new[:, in_keep.to(w.device)]
    if out_keep is not None and m.bias is not None:
        m.bias = _param(m.bias, m.bias[out_keep.to(w.device)])
    if new is not w:
        m.weight = _param(w, new)
    m.out_channels = new.shape[0]
    m.in_channels = new.shape[1] * g


@torch.no_grad()
def _cut_linear(m: nn.Linear, out_gone, in_gone) -> None:
    w = m.weight
    new = w
    out_keep, in_keep = _keep(m.out_features, out_gone), _keep(m.in_features, in_gone)
    if out_keep is not None:
        new = new[out_keep.to(w.device)]
        if m.bias is not None:
            m.bias = _param(m.bias, m.bias[out_keep.to(w.device)])
    if in_keep is not None:
        new = new[:, in_keep.to(w.device)]
    if new is not w:
        m.weight = _param(w, new)
    m.out_features, m.in_features = new.shape


@torch.no_grad()
def _cut_batchnorm(m: nn.modules.batchnorm._BatchNorm, gone) -> None:
    keep = _keep(m.num_features, gone)
    if keep is None:
        return
    dev = (m.weight if m.affine else m.running_mean).device
    keep = keep.to(dev)
    if m.affine:
        m.weight = _param(m.weight, m.weight[keep])
        m.bias = _param(m.bias, m.bias[keep])
    if m.track_running_stats and m.running_mean is not None:
        m.running_mean = m.running_mean[keep].clone()
        m.running_var = m.running_var[keep].clone()
    m.num_features = keep.numel()


def apply_removal(model: nn.Module, units, removal) -> None:
    """Cut every layer of `model` (the traced network, found by name) as `removal` says."""
    from compress.channel_select import apply_selection
    from compress.slimming.splits import rewrite_split_sizes

    modules = dict(model.named_modules())
    analysis = units.analysis
    sites = {s.bn_name: s for s in analysis.sites}
    for layer in analysis.cmap.layers:
        name, m = layer.name, modules.get(layer.name)
        out_gone, in_gone = removal.out.get(name), removal.inputs.get(name)
        if layer.kind == "bn":
            if name in removal.selections:
                site = sites[name]
                site.bn = m
                apply_selection(model, site, removal.selections[name], prune_consumer=False)
            elif removal.bn.get(name):
                _cut_batchnorm(m, removal.bn[name])
        elif layer.kind in ("conv", "depthwise", "grouped") and (out_gone or in_gone):
            _cut_conv(m, layer.kind, out_gone, in_gone)
        elif layer.kind == "linear" and (out_gone or in_gone):
            _cut_linear(m, out_gone, in_gone)
    rewrite_split_sizes(model, analysis.split_bindings, lambda sp: removal.split_sizes[id(sp)])
    check_no_empty_layer(model)


def check_no_empty_layer(model: nn.Module) -> None:
    """A layer left with zero channels is a broken network: refuse it, naming the layer."""
    for name, m in model.named_modules():
        widths = []
        if isinstance(m, nn.modules.conv._ConvNd):
            widths = [m.in_channels, m.out_channels]
        elif isinstance(m, nn.Linear):
            widths = [m.in_features, m.out_features]
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            widths = [m.num_features]
        if widths and min(widths) < 1:
            raise CompressError(f"pruning would leave {name} ({type(m).__name__}) with no channels")
