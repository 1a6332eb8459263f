"""β compensation: fold what removed channels still contribute into the layers that consume them.

With γ = 0 a removed channel emits a constant (ReLU(β), or whatever the following ops make of β).
Rather than deriving that constant per architecture, zero γ of every removed channel at once, run the
network once, and read the consumers' inputs at those channels. Folding is exact for linear and 1×1
consumers of a channel that is the same at every position; for padded k×k convolutions it is exact away
from the border, where zero padding replaces part of the constant, and the spatial mean is folded (the
least-squares bias). A channel that differs by position alone (padded with a nonzero value, or through an
average pool that counts padding) is folded the same way, as its spatial mean, so its fold is a
least-squares fit even for a 1×1 consumer; the self-check records what it gives up as `approximation`.
Where a channel is not quite constant (a squeeze-and-excitation gate multiplies it) its mean over the
probe batch is folded.

That mean stands in for the channel only where the channel barely varies with the image: the same forward
bounds what that variation could add to each consumer's output (|W| times the largest deviation), and a
consumer called more than once (a head shared by pyramid levels, each with its own BN) must get the same
constant at every call. Beyond `VARIATION_TOL` of the consumer's output, `CompensationError` names the
consumer, and the engine leaves the units that feed it alone: a gate computed from the kept channels
(spatial attention) makes a removed channel carry information, and no bias replaces that.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import CompressError

# Of the consumer's largest output magnitude on the probe: what a folded constant may leave unexplained.
VARIATION_TOL = 1e-3


class CompensationError(CompressError):
    """Removed channels reaching `module` are not one constant, so folding a bias would change the network."""

    def __init__(self, message: str, module: str, short: str):
        super().__init__(message)
        self.module, self.short = module, short


def silence(model: nn.Module, bn_channels: dict[str, list[int]], *, beta: bool,
            raw: dict[str, list[int]] | None = None) -> dict:
    """Zero γ (and β when `beta`) of the named BN channels in place, and the input weights that `raw`
    names (layers reading removed channels without a BN: compress.slimming.gating); returns what to
    restore."""
    modules = dict(model.named_modules())
    saved = {}
    with torch.no_grad():
        for name, idx in bn_channels.items():
            bn = modules[name]
            if not bn.affine:
                continue
            saved[bn] = (bn.weight.detach().clone(), bn.bias.detach().clone())
            i = torch.as_tensor(idx, device=bn.weight.device)
            bn.weight[i] = 0.0
            if beta:
                bn.bias[i] = 0.0
        for name, idx in (raw or {}).items():
            layer = modules[name]
            saved[layer] = (layer.weight.detach().clone(), None)
            layer.weight[:, torch.as_tensor(idx, device=layer.weight.device)] = 0.0
    return saved


def restore(saved: dict) -> None:
    with torch.no_grad():
        for layer, (w, b) in saved.items():
            layer.weight.copy_(w)
            if b is not None:
                layer.bias.copy_(b)


def delta_of(mod: nn.Module, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """What the removed input channels `idx` add to `mod`'s output, as one value per output channel."""
    if isinstance(mod, nn.Linear):
        value = x.index_select(1, idx).reshape(-1, idx.numel()).mean(dim=0)
        return mod.weight.detach().index_select(1, idx) @ value
    # Feed the removed channels' mean value alone through the convolution: its spatial mean is the bias
    # that best replaces them, exact away from the border, least-squares at the border.
    spatial = list(range(2, x.dim()))
    only_removed = torch.zeros_like(x[:1])
    only_removed[:, idx] = x.index_select(1, idx).mean(dim=[0, *spatial]).view(1, -1, *[1] * len(spatial))
    out = mod._conv_forward(only_removed, mod.weight.detach(), None)
    return out.mean(dim=[0, *spatial])


def variation_of(mod: nn.Module, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """An upper bound, per output channel, of how much what the removed inputs `idx` add to `mod`'s output
    changes with the image: |W| applied to each channel's largest deviation from its mean over the probe
    images, at any position. A pattern fixed by position alone (zero or average-pool padding at borders)
    carries nothing of the input; its fold is the least-squares approximation the module docstring names."""
    if isinstance(mod, nn.Linear):
        values = x.index_select(1, idx).reshape(-1, idx.numel())
        deviation = (values - values.mean(dim=0)).abs().amax(dim=0)
        return mod.weight.detach().index_select(1, idx).abs() @ deviation
    spatial = list(range(2, x.dim()))
    values = x.index_select(1, idx)
    deviation = (values - values.mean(dim=0, keepdim=True)).abs().amax(dim=[0, *spatial])
    only_removed = torch.zeros_like(x[:1])
    only_removed[:, idx] = deviation.view(1, -1, *[1] * len(spatial))
    out = mod._conv_forward(only_removed, mod.weight.detach().abs(), None)
    return out.amax(dim=[0, *spatial])


@torch.no_grad()
def measure_deltas(model: nn.Module, removal, probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per consumer (by name): the output offset that replaces its removed inputs, measured on `probe`.
    Raises CompensationError where no one offset can (see the module's docstring)."""
    if not removal.inputs:
        return {}
    modules = dict(model.named_modules())
    saved = silence(model, removal.bn, beta=False, raw=removal.raw)
    calls: dict[str, list[tuple[torch.Tensor, float, float]]] = {}
    names = {modules[n]: n for n in removal.inputs}
    pending: dict[nn.Module, tuple[torch.Tensor, float]] = {}

    def capture(mod, inputs):
        name = names[mod]
        x = inputs[0]
        idx = torch.as_tensor(removal.inputs[name], device=x.device)
        pending[mod] = (delta_of(mod, x, idx), float(variation_of(mod, x, idx).max()))

    def scale(mod, _inputs, out):
        if mod in pending and isinstance(out, torch.Tensor):
            delta, variation = pending.pop(mod)
            calls.setdefault(names[mod], []).append((delta, variation, float(out.detach().abs().max())))

    hooks = [modules[n].register_forward_pre_hook(capture) for n in removal.inputs]
    hooks += [modules[n].register_forward_hook(scale) for n in removal.inputs]
    try:
        model(probe)
    finally:
        for h in hooks:
            h.remove()
        restore(saved)
    deltas = {}
    for name, seen in calls.items():
        magnitude = max(max(s for _, _, s in seen), 1e-12)
        variation = max(v for _, v, _ in seen)
        if variation > VARIATION_TOL * magnitude:
            raise CompensationError(
                f"the removed channels reaching {name} still vary (by up to {variation / magnitude:.1e} of its "
                "output: a gate computed from kept channels multiplies them), so no constant replaces them", name,
                "they still vary there")
        first = seen[0][0]
        apart = max((float((d - first).abs().max()) for d, _, _ in seen[1:]), default=0.0)
        if apart > VARIATION_TOL * magnitude:
            raise CompensationError(
                f"{name} runs {len(seen)} times and its removed inputs differ between the calls (by up to "
                f"{apart / magnitude:.1e} of its output: a layer shared by branches with their own BN), so no "
                "one constant replaces them", name, f"its {len(seen)} calls see different constants")
        deltas[name] = seen[-1][0]
    return {n: d for n, d in deltas.items() if bool(d.abs().gt(0).any())}


@torch.no_grad()
def fold_deltas(model: nn.Module, analysis, deltas: dict[str, torch.Tensor]) -> dict[str, str]:
    """Add each delta to its consumer's output: into the next BN's running mean when that BN is its
    only reader and each runs once (keeps bias-free convs bias-free), otherwise into the layer's own bias.
    A BN that also runs after another layer, or a layer whose other calls feed other BNs, would carry the
    constant where it does not belong. Returns where each went (consumer -> "bias" or the BN's name)."""
    modules = dict(model.named_modules())
    calls = analysis.trace.layer_calls()
    where = {}
    for name, delta in deltas.items():
        mod = modules[name]
        layer = analysis.layers[name]
        readers = layer.out_value.readers
        bn = readers[0].module if len(readers) == 1 and readers[0].op == "layer" else None
        once = bn is not None and len(calls.get(name, ())) == 1 and len(calls.get(readers[0].scope, ())) == 1
        if once and isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats \
                and bn not in analysis.cmap.cuts and bn.running_mean is not None:
            target = modules[readers[0].scope]
            target.running_mean.sub_(delta.to(target.running_mean))
            where[name] = readers[0].scope
            continue
        if mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype, device=mod.weight.device))
        mod.bias.add_(delta.to(mod.bias))
        where[name] = "bias"
    return where
