"""Network slimming (Liu et al., ICCV 2017): global BN-γ threshold, physical channel removal.

Channels are removed through torch-pruning's dependency graph, so every layer coupled to a channel
(residual additions, concatenations, depthwise groups) loses it together. A coupled channel is only as
unimportant as its most important BatchNorm: its score is the largest |γ| among the BNs that carry it.

Before removal the constant that each removed channel still emits (ReLU(β) when γ is zero) is folded
into the consumers' biases or BN running means: see `_compensate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from compress.errors import CompressError

PLAN_FORMAT = "compress.plan/1"


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers whose γ the sparsity penalty acts on: all of them, as in the paper."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]


@torch.no_grad()
def add_l1_subgradient(model: nn.Module, sparsity: float) -> None:
    """Add λ·sign(γ) to every BN γ gradient; call after backward (and after unscaling under AMP)."""
    if sparsity <= 0:
        return
    for bn in bn_layers(model):
        if bn.weight.grad is not None:
            bn.weight.grad.add_(torch.sign(bn.weight), alpha=sparsity)


def gamma_sparsity(model: nn.Module, eps: float = 1e-2) -> float:
    """Fraction of BN γ with |γ| below `eps`, a cheap progress signal during sparse training."""
    gammas = [bn.weight.detach().abs().flatten() for bn in bn_layers(model)]
    if not gammas:
        return 0.0
    g = torch.cat(gammas)
    return float((g < eps).float().mean())


@dataclass
class ChannelGroup:
    """Channels that must be removed together, named by the layer whose outputs define them."""

    root_name: str
    root: nn.Module
    root_fn: object
    bn_names: list[str]
    scores: torch.Tensor  # per root channel: max |γ| over the coupled BNs
    keep: list[int] = field(default_factory=list)


def _output_layer(model: nn.Module, example_input: torch.Tensor) -> nn.Module:
    """The last Conv2d/Linear to run: its outputs are the classes and must never be pruned."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise CompressError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
    return order[-1]


def _dependency_graph(model: nn.Module, example_input: torch.Tensor):
    out_layer = _output_layer(model, example_input)
    with torch.enable_grad():  # torch-pruning traces through autograd
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    return graph, out_layer


def channel_groups(model: nn.Module, example_input: torch.Tensor):
    """Every prunable group of coupled channels that contains at least one BatchNorm."""
    was_training = model.training
    model.eval()
    graph, out_layer = _dependency_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    groups: list[ChannelGroup] = []
    for group in graph.get_all_groups(ignored_layers=[out_layer], root_module_types=(nn.Conv2d, nn.Linear)):
        root_dep = group[0].dep
        root = root_dep.target.module
        n_root = len(group[0].idxs)
        scores = torch.full((n_root,), -1.0)
        bn_names = []
        for item in group:
            mod = item.dep.target.module
            if isinstance(mod, nn.BatchNorm2d) and mod.affine:
                gamma = mod.weight.detach().abs().cpu()
                idx = torch.as_tensor(item.idxs, dtype=torch.long)
                root_idx = torch.as_tensor(item.root_idxs, dtype=torch.long)
                scores[root_idx] = torch.maximum(scores[root_idx], gamma[idx])
                if names[mod] not in bn_names:
                    bn_names.append(names[mod])
        if not bn_names:
            continue
        groups.append(ChannelGroup(names[root], root, root_dep.handler, bn_names, scores))
    probe = _probe_batch(example_input)
    groups = [g for g in groups if _gated_by_batchnorm(model, graph, g, probe)]
    model.train(was_training)
    return graph, groups


def _consumers(graph, group) -> dict[nn.Module, list[int]]:
    """Conv/Linear layers that read the group's channels as inputs, with the channel indices they read."""
    found: dict[nn.Module, list[int]] = {}
    for item in group:
        mod = item.dep.target.module
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and graph.is_in_channel_pruning_fn(item.dep.handler):
            found.setdefault(mod, []).extend(int(i) for i in item.idxs)
    return found


@torch.no_grad()
def _gated_by_batchnorm(model: nn.Module, graph, g: ChannelGroup, probe: torch.Tensor) -> bool:
    """True when zeroing the group's γ turns every input it feeds into a constant.

    Slimming may only remove channels whose information flows through the BN scaling factors. A channel
    that also reaches a layer without passing a BN (the residual stream feeding a projection shortcut in a
    pre-activation ResNet, for instance) keeps carrying information when its γ are zero, so removing it
    would change the network: such groups are not prunable.
    """
    group = graph.get_pruning_group(g.root, g.root_fn, list(range(g.scores.numel())))
    consumers = _consumers(graph, group)
    saved = {}
    for item in group:
        mod = item.dep.target.module
        if isinstance(mod, nn.BatchNorm2d) and mod.affine:
            saved.setdefault(mod, mod.weight.detach().clone())
            mod.weight[torch.as_tensor(item.idxs)] = 0.0
    varying = []

    def check(mod, inputs):
        x = inputs[0]
        idx = torch.as_tensor(sorted(set(consumers[mod])), device=x.device)
        sel = x[:, idx].transpose(0, 1).reshape(idx.numel(), -1)
        spread = sel.max(dim=1).values - sel.min(dim=1).values
        if bool((spread > 1e-5 * (1 + sel.abs().max(dim=1).values)).any()):
            varying.append(mod)

    hooks = [m.register_forward_pre_hook(check) for m in consumers]
    try:
        model(probe)
    finally:
        for h in hooks:
            h.remove()
        _restore(saved)
    return not varying


def global_threshold(groups: list[ChannelGroup], model: nn.Module, percent: float) -> float:
    """|γ| at the `percent` quantile of every BN channel that belongs to a prunable group."""
    modules = dict(model.named_modules())
    seen = []
    for name in dict.fromkeys(n for g in groups for n in g.bn_names):
        seen.append(modules[name].weight.detach().abs().flatten().cpu())
    all_gamma = torch.cat(seen).sort().values
    k = min(int(percent * all_gamma.numel()), all_gamma.numel() - 1)
    return float(all_gamma[k])


def floor_channels(n: int, min_keep: float, min_channels: int) -> int:
    return min(n, max(min_channels, math.ceil(min_keep * n)))


def choose_kept(scores: torch.Tensor, threshold: float, *, min_keep: float, min_channels: int,
                round_to: int) -> list[int]:
    """Indices kept in one group: those at or above the threshold, topped up to the floor and rounding."""
    n = scores.numel()
    n_keep = int((scores >= threshold).sum())
    n_keep = max(n_keep, floor_channels(n, min_keep, min_channels))
    if round_to > 1:
        n_keep = min(n, int(math.ceil(n_keep / round_to) * round_to))
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(int(i) for i in order[:n_keep])


def prune(model: nn.Module, percent: float, example_input: torch.Tensor, *, min_keep: float = 0.2,
          min_channels: int = 1, round_to: int = 1, compensate: bool = True,
          plan: dict | None = None) -> tuple[nn.Module, dict]:
    """Prune `model` in place: a fraction `percent` of BN channels by one global γ threshold.

    With `plan` (the dict that an earlier call returned), its kept indices are replayed instead.
    Returns the model and the plan describing the decision per group.
    """
    if plan is None and not 0.0 < percent < 1.0:
        raise CompressError(f"percent must be in (0, 1), got {percent}")
    if round_to < 1:
        raise CompressError(f"round_to must be >= 1, got {round_to}")
    model.eval()
    graph, groups = channel_groups(model, example_input)
    if not groups:
        raise CompressError(f"{type(model).__name__} has no BatchNorm channels to prune")
    if plan is not None:
        threshold = _apply_plan(groups, plan)
    else:
        threshold = global_threshold(groups, model, percent)
        for g in groups:
            g.keep = choose_kept(g.scores, threshold, min_keep=min_keep, min_channels=min_channels,
                                 round_to=round_to)
    if compensate:
        _compensate(model, graph, groups, example_input)
    records = []
    for g in groups:
        n = g.scores.numel()
        removed = sorted(set(range(n)) - set(g.keep))
        records.append(_group_record(g, threshold, min_keep, min_channels, removed))
        if removed:
            graph.get_pruning_group(g.root, g.root_fn, removed).prune()
    before = sum(r["channels_before"] for r in records)
    after = sum(r["channels_after"] for r in records)
    new_plan = {
        "format": PLAN_FORMAT,
        "percent": plan["percent"] if plan else percent,
        "threshold": threshold,
        "min_keep": plan.get("min_keep", min_keep) if plan else min_keep,
        "min_channels": min_channels,
        "round_to": round_to,
        "compensated": compensate,
        "channels_before": before,
        "channels_after": after,
        "pruned_fraction": 1 - after / before,
        "groups": records,
    }
    return model, new_plan


def _group_record(g: ChannelGroup, threshold, min_keep, min_channels, removed) -> dict:
    s = g.scores
    n = s.numel()
    below = int((s < threshold).sum())
    return {
        "root": g.root_name,
        "bn_layers": g.bn_names,
        "channels_before": n,
        "channels_after": len(g.keep),
        "below_threshold": below,
        "floor_applied": n - below < len(g.keep) and below > len(removed),
        "kept": g.keep,
        "gamma": {"min": float(s.min()), "max": float(s.max()), "mean": float(s.mean()),
                  "median": float(s.median())},
    }


def _apply_plan(groups: list[ChannelGroup], plan: dict) -> float:
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise CompressError(f"not a {PLAN_FORMAT} plan")
    try:
        by_root = {r["root"]: r for r in plan["groups"]}
        for r in by_root.values():
            r["kept"] = [int(i) for i in r["kept"]]
            int(r["channels_before"])
        float(plan["threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CompressError(f"plan is malformed: missing or invalid {exc}") from None
    for g in groups:
        rec = by_root.get(g.root_name)
        if rec is None:
            raise CompressError(f"plan has no entry for layer {g.root_name}; was it made for another model?")
        if rec["channels_before"] != g.scores.numel():
            raise CompressError(f"plan says {g.root_name} has {rec['channels_before']} channels, "
                                f"the model has {g.scores.numel()}")
        if any(not 0 <= i < g.scores.numel() for i in rec["kept"]) or not rec["kept"]:
            raise CompressError(f"plan keeps invalid channel indices for {g.root_name}")
        g.keep = sorted(rec["kept"])
    extra = set(by_root) - {g.root_name for g in groups}
    if extra:
        raise CompressError(f"plan names layers the model lacks: {', '.join(sorted(extra)[:3])}")
    return float(plan["threshold"])


# --- β compensation ----------------------------------------------------------------------------------

@torch.no_grad()
def _compensate(model: nn.Module, graph, groups: list[ChannelGroup], example_input: torch.Tensor) -> None:
    """Fold what removed channels still contribute into the layers that consume them.

    With γ = 0 a removed channel emits a constant (ReLU(β), or whatever the following ops make of
    β). Rather than deriving that constant per architecture, zero γ of the removed channels, run the
    network, and read the consumers' inputs at those channels. Folding is exact for Linear and 1×1
    consumers; for padded k×k convolutions it is exact away from the border, where zero padding
    replaces part of the constant.
    """
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    removed_in: dict[nn.Module, set[int]] = {}
    saved = {}
    for g in groups:
        removed = sorted(set(range(g.scores.numel())) - set(g.keep))
        if not removed:
            continue
        group = graph.get_pruning_group(g.root, g.root_fn, removed)
        for item in group:
            mod = item.dep.target.module
            if isinstance(mod, nn.BatchNorm2d) and mod.affine:
                saved.setdefault(mod, mod.weight.detach().clone())
                mod.weight[torch.as_tensor(item.idxs)] = 0.0
            elif isinstance(mod, (nn.Conv2d, nn.Linear)) and graph.is_in_channel_pruning_fn(item.dep.handler):
                if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                    continue  # grouped input channels leave together with their outputs
                removed_in.setdefault(mod, set()).update(int(i) for i in item.idxs)
    if not removed_in:
        _restore(saved)
        return

    deltas: dict[nn.Module, torch.Tensor] = {}

    def capture(mod, inputs):
        x = inputs[0]
        idx = torch.as_tensor(sorted(removed_in[mod]), device=x.device)
        if isinstance(mod, nn.Linear):
            value = x[:, idx].reshape(-1, idx.numel()).mean(dim=0)
            deltas[mod] = mod.weight.detach()[:, idx] @ value
            return
        # Feed the removed channels' mean value alone through the convolution: its spatial mean is
        # the bias that best replaces them, exact away from the border, least-squares at the border.
        only_removed = torch.zeros_like(x[:1])
        only_removed[:, idx] = x[:, idx].mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        out = nn.functional.conv2d(only_removed, mod.weight.detach(), None, mod.stride, mod.padding,
                                   mod.dilation, mod.groups)
        deltas[mod] = out.mean(dim=(0, 2, 3))

    hooks = [m.register_forward_pre_hook(capture) for m in removed_in]
    try:
        model(_probe_batch(example_input))
    finally:
        for h in hooks:
            h.remove()
    _restore(saved)

    for mod, delta in deltas.items():
        if bool(delta.abs().gt(0).any()):
            _add_output_offset(mod, delta, graph, names)


def _probe_batch(example_input: torch.Tensor) -> torch.Tensor:
    """A batch with varied content, so measured constants are not artefacts of one input."""
    gen = torch.Generator().manual_seed(0)
    shape = (8, *example_input.shape[1:])
    return torch.randn(shape, generator=gen).to(example_input.device, example_input.dtype)


def _restore(saved: dict) -> None:
    for bn, weight in saved.items():
        bn.weight.copy_(weight)


def _add_output_offset(mod: nn.Module, delta: torch.Tensor, graph, names) -> None:
    """Add `delta` to a layer's output: into the next BN's running mean when that BN is its only
    consumer (keeps bias-free convs bias-free), otherwise into the layer's own bias."""
    node = graph.module2node.get(mod)
    consumers = [n.module for n in node.outputs] if node is not None else []
    if len(consumers) == 1 and isinstance(consumers[0], nn.BatchNorm2d) and consumers[0].track_running_stats:
        consumers[0].running_mean.sub_(delta.to(consumers[0].running_mean))
        return
    if mod.bias is None:
        mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype,
                                            device=mod.weight.device))
    mod.bias.add_(delta.to(mod.bias))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches) -> None:
    """Re-estimate every BN's running statistics on `batches` (inputs only; no weight changes).

    Removing channels shifts the statistics that later BNs were trained on; on a network whose γ are
    not yet sparse this alone can collapse accuracy to chance, and a few thousand images fix it.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.track_running_stats]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.eval()


def zero_removed_channels(model: nn.Module, plan: dict, example_input: torch.Tensor, *, beta: bool) -> None:
    """Set γ (and β when `beta`) of every BN channel that `plan` removes, without removing it.

    The unpruned network treated this way computes what the pruned one must: the reference for
    exactness checks.
    """
    graph, groups = channel_groups(model, example_input)
    _apply_plan(groups, plan)
    with torch.no_grad():
        for g in groups:
            removed = sorted(set(range(g.scores.numel())) - set(g.keep))
            if not removed:
                continue
            for item in graph.get_pruning_group(g.root, g.root_fn, removed):
                mod = item.dep.target.module
                if isinstance(mod, nn.BatchNorm2d) and mod.affine:
                    idx = torch.as_tensor(item.idxs)
                    mod.weight[idx] = 0.0
                    if beta:
                        mod.bias[idx] = 0.0
