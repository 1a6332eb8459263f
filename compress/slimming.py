"""Network slimming (Liu et al., ICCV 2017): global BN-γ threshold, physical channel removal.

One global threshold over the |γ| of every BN decides; two kinds of unit carry it out:

- groups: channels removed through torch-pruning's dependency graph, so every layer coupled to a
  channel (residual additions, concatenations, depthwise groups) loses it together. A coupled channel is
  only as unimportant as its most important BatchNorm: its score is the largest |γ| among its BNs.
- selections: a BN that reads a shared tensor (a pre-activation ResNet's residual stream, a DenseNet's
  concatenation) and feeds one consumer loses channels for that consumer alone, as in the paper
  (compress.channel_select). The shared channels themselves stay.

Before removal the constant that each removed channel still emits (ReLU(β) when γ is zero) is folded
into the consumers' biases or BN running means: see `_compensate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch_pruning as tp
from torch import nn

from compress.budget import CostModel, cost_aware_scores, search_threshold
from compress.channel_select import SelectBatchNorm2d, SelectionSite, apply_selection, find_sites, tp_pruner
from compress.errors import CompressError
from compress.measure import count_params_macs

PLAN_FORMAT = "compress.plan/2"
OLD_PLAN_FORMAT = "compress.plan/1"  # groups only; still replayable on models without selection sites


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
    importance: torch.Tensor | None = None  # what the threshold compared, when not the scores
    # A grouped convolution among the group's layers splits its channels into `conv_groups` equal runs,
    # and torch-pruning can only remove the same positions from every run.
    conv_groups: int = 1


@dataclass
class Selection:
    """One BN pruned for its own consumer alone (see compress.channel_select)."""

    site: SelectionSite
    scores: torch.Tensor  # per BN feature: |γ|
    keep: list[int] = field(default_factory=list)  # positions among the BN's current features
    importance: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return self.site.bn_name


@dataclass
class PruningUnits:
    """Everything one pruning decision acts on: coupled groups and per-consumer selections."""

    graph: object
    groups: list[ChannelGroup]
    selections: list[Selection]


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
    try:
        with torch.enable_grad():  # torch-pruning traces through autograd
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, customized_pruners={SelectBatchNorm2d: tp_pruner()})
    except (ZeroDivisionError, IndexError, KeyError, AttributeError) as exc:
        # torch-pruning's tracer fails on some reshapes (channel shuffle's 5-D view, for one).
        raise CompressError(f"torch-pruning cannot trace {type(model).__name__}'s channel dependencies "
                            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                            ) from None
    return graph, out_layer


def pruning_units(model: nn.Module, example_input: torch.Tensor) -> PruningUnits:
    """The prunable units of `model`: BN-gated groups of coupled channels, and selection sites.

    A BN that reads a shared tensor (residual stream, concatenation) and feeds one consumer is pruned
    by selection, for that consumer alone; the group of the shared channels is then left whole, since
    removing a channel where it is produced would take it from every reader.
    """
    was_training = model.training
    model.eval()
    graph, out_layer = _dependency_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    sites = find_sites(model, graph)
    site_bns = {s.bn for s in sites}
    groups: list[ChannelGroup] = []
    for group in graph.get_all_groups(ignored_layers=[out_layer], root_module_types=(nn.Conv2d, nn.Linear)):
        mods = [item.dep.target.module for item in group]
        if any(m in site_bns or isinstance(m, SelectBatchNorm2d) for m in mods):
            continue
        root_dep = group[0].dep
        n_root = len(group[0].idxs)
        scores = torch.full((n_root,), -1.0)
        bn_names = []
        for item, mod in zip(group, mods):
            if isinstance(mod, nn.BatchNorm2d) and mod.affine:
                gamma = mod.weight.detach().abs().cpu()
                idx = torch.as_tensor(item.idxs, dtype=torch.long)
                root_idx = torch.as_tensor(item.root_idxs, dtype=torch.long)
                scores[root_idx] = torch.maximum(scores[root_idx], gamma[idx])
                if names[mod] not in bn_names:
                    bn_names.append(names[mod])
        if not bn_names:
            continue
        conv_groups = _conv_group_period(group, mods, n_root)
        if conv_groups is None:
            continue  # a grouped convolution whose runs do not line up with the group's channels
        groups.append(ChannelGroup(names[root_dep.target.module], root_dep.target.module, root_dep.handler,
                                   bn_names, scores, conv_groups=conv_groups))
    probe = _probe_batch(example_input)
    groups = [g for g in groups if _gated_by_batchnorm(model, graph, g, probe)]
    selections = [Selection(s, s.bn.weight.detach().abs().cpu()) for s in sites]
    model.train(was_training)
    return PruningUnits(graph, groups, selections)


def _conv_group_period(group, mods, n_root: int) -> int | None:
    """How many equal runs a grouped convolution in the group cuts its channels into (1: none); None
    when a grouped convolution's channels are not the group's channels one to one, which this code
    does not prune."""
    period = 1
    for item, mod in zip(group, mods):
        if not isinstance(mod, nn.Conv2d) or mod.groups == 1:
            continue
        if mod.groups == mod.in_channels == mod.out_channels:
            continue  # depthwise: torch-pruning couples each input channel with its output channel
        if list(item.idxs) != list(item.root_idxs) or len(item.idxs) != n_root:
            return None
        period = math.lcm(period, mod.groups)
    return period if n_root % period == 0 else None


def channel_groups(model: nn.Module, example_input: torch.Tensor):
    """The dependency graph and the BN-gated groups of coupled channels (selection sites aside)."""
    units = pruning_units(model, example_input)
    return units.graph, units.groups


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


def all_gammas(model: nn.Module) -> torch.Tensor:
    """|γ| of every BN in the model, in module order: the population the paper thresholds."""
    gammas = [bn.weight.detach().abs().flatten().cpu() for bn in bn_layers(model)]
    if not gammas:
        raise CompressError(f"{type(model).__name__} has no BatchNorm layer with a scaling factor")
    return torch.cat(gammas)


def global_threshold(model: nn.Module, percent: float) -> float:
    """|γ| at index int(percent·N) of all N BN scaling factors sorted; channels above it are kept.

    Every BN counts, also those whose channels cannot be removed, as in the paper's code.
    """
    all_gamma = all_gammas(model).sort().values
    k = min(int(percent * all_gamma.numel()), all_gamma.numel() - 1)
    return float(all_gamma[k])


def floor_channels(n: int, min_keep: float, min_channels: int) -> int:
    return min(n, max(min_channels, math.ceil(min_keep * n)))


def choose_kept(scores: torch.Tensor, threshold: float, *, min_keep: float, min_channels: int,
                round_to: int, conv_groups: int = 1) -> list[int]:
    """Indices kept in one unit: those above the threshold, topped up to the floor and rounding.

    With `conv_groups` g > 1 the channels are g equal runs that must keep the same positions: a
    position is scored by the mean |γ| of its channels across the runs (as torch-pruning's own grouped
    importance does; the maximum kept almost every position of a 32-group ResNeXt), and kept or removed
    in all of them."""
    if conv_groups > 1:
        period = scores.numel() // conv_groups
        positions = choose_kept(scores.view(conv_groups, period).mean(dim=0), threshold, min_keep=min_keep,
                                min_channels=max(1, -(-min_channels // conv_groups)),
                                round_to=max(1, round_to // math.gcd(round_to, conv_groups)))
        return sorted(j * period + p for j in range(conv_groups) for p in positions)
    n = scores.numel()
    n_keep = int((scores > threshold).sum())
    n_keep = max(n_keep, floor_channels(n, min_keep, min_channels))
    if round_to > 1:
        n_keep = min(n, int(math.ceil(n_keep / round_to) * round_to))
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(int(i) for i in order[:n_keep])


def _prunable_units(model: nn.Module, example_input: torch.Tensor) -> PruningUnits:
    """pruning_units, refusing a network that gives slimming nothing to act on."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise CompressError(f"{type(model).__name__} has no BatchNorm2d layers: network slimming prunes by "
                            "BatchNorm γ, so the network needs BatchNorm after its convolutions")
    units = pruning_units(model, example_input)
    if not units.groups and not units.selections:
        raise CompressError(f"{type(model).__name__} has no BatchNorm channels to prune")
    return units


def resolve_round_to(value: int | str) -> int:
    """`round_to` as a number: 'auto' is ONNX Runtime's NCHWc channel block on this CPU (16 with AVX-512,
    8 with AVX2, 1 elsewhere), the multiple whose widths its fast CPU convolutions need."""
    if value == "auto":
        from compress.runtime.cpu_features import nchwc_block

        return nchwc_block()
    if isinstance(value, bool) or not isinstance(value, int):
        raise CompressError(f"round_to must be a whole number >= 1 or 'auto', got {value!r}")
    return value


def check_floor(*, round_to: int, min_channels: int) -> None:
    """Refuse rounding and floor settings no unit could honour."""
    if round_to < 1:
        raise CompressError(f"round_to must be >= 1, got {round_to}")
    if min_channels < 1:
        raise CompressError(f"min_channels must be >= 1, got {min_channels}")


def prune(model: nn.Module, percent: float | None, example_input: torch.Tensor, *, min_keep: float = 0.2,
          min_channels: int = 1, round_to: int | str = 1, compensate: bool = True, plan: dict | None = None,
          target_macs: float | None = None, target_params: float | None = None,
          cost_aware: bool = False) -> tuple[nn.Module, dict]:
    """Prune `model` in place: BN channels under one global γ threshold.

    The threshold is the `percent` quantile of every BN's |γ|; or, with `target_macs` / `target_params`
    (a fraction F of the unpruned network's), the lowest one whose pruned network keeps at most F of
    its MACs / parameters (compress.budget), optionally with cost-aware importance. With `plan` (the
    dict that an earlier call returned), its kept indices are replayed instead.
    Returns the model and the plan describing the decision per group and per selection.
    """
    targets = {k: v for k, v in (("macs", target_macs), ("params", target_params)) if v is not None}
    if len(targets) > 1:
        raise CompressError("give target_macs or target_params, not both")
    if plan is None and not targets and not (percent is not None and 0.0 < percent < 1.0):
        raise CompressError(f"percent must be in (0, 1), got {percent}")
    if cost_aware and not targets:
        raise CompressError("cost_aware importance needs a budget: target_macs or target_params")
    round_to = resolve_round_to(round_to)
    check_floor(round_to=round_to, min_channels=min_channels)
    model.eval()
    units = _prunable_units(model, example_input)
    groups, selections = units.groups, units.selections
    budget = None
    if plan is not None:
        threshold = _apply_plan(units, plan)
        budget = plan.get("budget")
    elif targets:
        threshold, budget = _meet_budget(model, units, example_input, *next(iter(targets.items())), cost_aware,
                                         compensate, dict(min_keep=min_keep, min_channels=min_channels,
                                                          round_to=round_to))
        percent = None
    else:
        threshold = global_threshold(model, percent)
        for unit in [*groups, *selections]:
            unit.keep = choose_kept(unit.scores, threshold, min_keep=min_keep, min_channels=min_channels,
                                    round_to=round_to, conv_groups=getattr(unit, "conv_groups", 1))
    if compensate:
        _compensate(model, units, example_input)
    group_records = [_record(g, threshold, {"root": g.root_name, "bn_layers": g.bn_names}) for g in groups]
    selection_records = [_record(s, threshold, {"bn": s.name, "consumer": s.site.consumer_name,
                                                "input_channels": s.site.in_channels}) for s in selections]
    for g in groups:
        removed = sorted(set(range(g.scores.numel())) - set(g.keep))
        if removed:
            units.graph.get_pruning_group(g.root, g.root_fn, removed).prune()
    # After the groups: a consumer may lose outputs in a group and inputs to its selection.
    for s, rec in zip(selections, selection_records):
        apply_selection(model, s.site, s.keep)
        rec["selected"] = s.site.selected()
    if budget is not None and plan is None:
        params, macs = count_params_macs(model, tuple(example_input.shape[1:]))
        budget["met"] = (macs if budget["target"] == "macs" else params) / budget["full"]
    records = group_records + selection_records
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
        "groups": group_records,
        "selections": selection_records,
    }
    if budget is not None:
        new_plan["budget"] = budget
    return model, new_plan


def _budget_scores(units: PruningUnits, costs: CostModel, target: str, cost_aware: bool, floor: dict):
    """The scores a budget search thresholds, per group and selection, and the function that picks one
    unit's kept channels from its scores; cost-aware importance is stored on the units for the plan."""
    if cost_aware:
        group_scores, selection_scores = cost_aware_scores(costs, target)
        for unit, imp in zip([*units.groups, *units.selections], [*group_scores, *selection_scores]):
            unit.importance = imp
    else:
        group_scores = [g.scores for g in units.groups]
        selection_scores = [s.scores for s in units.selections]
    runs = {id(sc): g.conv_groups for g, sc in zip(units.groups, group_scores)}
    choose = lambda s, thr: choose_kept(s, thr, **floor, conv_groups=runs.get(id(s), 1))  # noqa: E731
    return (group_scores, selection_scores), choose


def least_budget(model: nn.Module, example_input: torch.Tensor, target: str = "macs", *, min_keep: float = 0.2,
                 min_channels: int = 1, round_to: int = 1, compensate: bool = True,
                 cost_aware: bool = False) -> float:
    """The smallest `target_{target}` fraction that pruning to a budget accepts: every unit at its floor.

    Half a MAC (or parameter) above the floor's cost, so that the float round trip cannot refuse the
    floor itself while nothing larger fits (costs are integers). 1.0 or more: nothing can be pruned.
    """
    round_to = resolve_round_to(round_to)
    check_floor(round_to=round_to, min_channels=min_channels)
    model.eval()
    units = _prunable_units(model, example_input)
    costs = CostModel(model, units, example_input, compensate=compensate)
    (group_scores, selection_scores), choose = _budget_scores(
        units, costs, target, cost_aware, dict(min_keep=min_keep, min_channels=min_channels, round_to=round_to))
    keeps = ([choose(s, math.inf) for s in group_scores], [choose(s, math.inf) for s in selection_scores])
    return (costs.cost(keeps)[target] + 0.5) / costs.full[target]


def _meet_budget(model, units: PruningUnits, example_input, target: str, fraction: float, cost_aware: bool,
                 compensate: bool, floor: dict) -> tuple[float, dict]:
    """Set every unit's kept channels to meet the budget; returns the threshold and the budget record."""
    costs = CostModel(model, units, example_input, compensate=compensate)
    scores, choose = _budget_scores(units, costs, target, cost_aware, floor)
    threshold, found = search_threshold(costs, target, fraction, choose, scores)
    group_keeps, selection_keeps = found["keeps"]
    for unit, keep in zip([*units.groups, *units.selections], [*group_keeps, *selection_keeps]):
        unit.keep = keep
    return threshold, {"target": target, "asked": fraction, "full": costs.full[target],
                       "estimated": found["estimate"][target] / costs.full[target],
                       "importance": f"|γ| / {target} share" if cost_aware else "|γ|"}


def _record(unit, threshold: float, names: dict) -> dict:
    s = unit.scores
    n = s.numel()
    below = int(((s if unit.importance is None else unit.importance) <= threshold).sum())
    removed = n - len(unit.keep)
    return {
        **names,
        "channels_before": n,
        "channels_after": len(unit.keep),
        "below_threshold": below,
        "floor_applied": below > removed,
        "kept": unit.keep,
        "gamma": {"min": float(s.min()), "max": float(s.max()), "mean": float(s.mean()),
                  "median": float(s.median())},
    }


def _apply_plan(units: PruningUnits, plan: dict) -> float:
    from compress.validate import validate_plan

    validate_plan(plan, where="plan")  # refused, never cast: indices must already be integers
    by_root = {r["root"]: r for r in plan["groups"]}
    by_bn = {r["bn"]: r for r in plan.get("selections", [])}
    _replay(units.groups, by_root, lambda g: g.root_name, "layer")
    _replay(units.selections, by_bn, lambda s: s.name, "channel selection at")
    return float(plan["threshold"])


def _replay(units, records: dict, name_of, what: str) -> None:
    for unit in units:
        name = name_of(unit)
        rec = records.get(name)
        n = unit.scores.numel()
        if rec is None:
            raise CompressError(f"plan has no entry for {what} {name}; was it made for another model "
                                f"or by an older version?")
        if rec["channels_before"] != n:
            raise CompressError(f"plan says {name} has {rec['channels_before']} channels, the model has {n}")
        if any(not 0 <= i < n for i in rec["kept"]) or not rec["kept"]:
            raise CompressError(f"plan keeps invalid channel indices for {name}")
        runs = getattr(unit, "conv_groups", 1)
        if runs > 1:
            period = n // runs
            positions = [{i % period for i in rec["kept"] if i // period == j} for j in range(runs)]
            if any(p != positions[0] for p in positions):
                raise CompressError(f"plan keeps different positions in the {runs} groups of a grouped "
                                    f"convolution at {name}; every group must keep the same ones")
        unit.keep = sorted(rec["kept"])
    extra = set(records) - {name_of(u) for u in units}
    if extra:
        raise CompressError(f"plan names {what} layers the model lacks: {', '.join(sorted(extra)[:3])}")


# --- what a plan removes --------------------------------------------------------------------------------

def _removed_channels(units: PruningUnits):
    """BN channels a decision removes, and the input channels each consumer loses with them."""
    graph = units.graph
    bn_removed: dict[nn.BatchNorm2d, set[int]] = {}
    removed_in: dict[nn.Module, set[int]] = {}
    for g in units.groups:
        removed = sorted(set(range(g.scores.numel())) - set(g.keep))
        if not removed:
            continue
        for item in graph.get_pruning_group(g.root, g.root_fn, removed):
            mod = item.dep.target.module
            if isinstance(mod, nn.BatchNorm2d) and mod.affine:
                bn_removed.setdefault(mod, set()).update(int(i) for i in item.idxs)
            elif isinstance(mod, (nn.Conv2d, nn.Linear)) and graph.is_in_channel_pruning_fn(item.dep.handler):
                if isinstance(mod, nn.Conv2d) and mod.groups != 1:
                    continue  # grouped input channels leave together with their outputs
                removed_in.setdefault(mod, set()).update(int(i) for i in item.idxs)
    for s in units.selections:
        removed = set(range(s.scores.numel())) - set(s.keep)
        if removed:
            bn_removed.setdefault(s.site.bn, set()).update(removed)
            removed_in.setdefault(s.site.consumer, set()).update(removed)
    return bn_removed, removed_in


# --- β compensation ----------------------------------------------------------------------------------

@torch.no_grad()
def _compensate(model: nn.Module, units: PruningUnits, example_input: torch.Tensor) -> None:
    """Fold what removed channels still contribute into the layers that consume them.

    With γ = 0 a removed channel emits a constant (ReLU(β), or whatever the following ops make of
    β). Rather than deriving that constant per architecture, zero γ of the removed channels, run the
    network, and read the consumers' inputs at those channels. Folding is exact for Linear and 1×1
    consumers; for padded k×k convolutions it is exact away from the border, where zero padding
    replaces part of the constant.
    """
    names = {m: n for n, m in model.named_modules()}
    bn_removed, removed_in = _removed_channels(units)
    if not removed_in:
        return
    saved = {}
    for bn, idx in bn_removed.items():
        saved[bn] = bn.weight.detach().clone()
        bn.weight[torch.as_tensor(sorted(idx))] = 0.0

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
            _add_output_offset(mod, delta, units.graph, names)


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
    exactness checks. For a selection the BN's removed channels then emit ReLU(0) = 0 (ReLU(β) with
    `beta` false) to its one consumer, which is what dropping them for that consumer means.
    """
    units = pruning_units(model, example_input)
    _apply_plan(units, plan)
    bn_removed, _ = _removed_channels(units)
    with torch.no_grad():
        for bn, idx in bn_removed.items():
            idx = torch.as_tensor(sorted(idx))
            bn.weight[idx] = 0.0
            if beta:
                bn.bias[idx] = 0.0
