"""The units one pruning decision acts on, read from the channel map of a traced network.

- groups: channels made by convolutions and linear layers, with everything coupled to them (residual
  additions, concatenations, depthwise convolutions, splits). A group is named by its root, the first
  layer in the trace whose outputs carry every channel of the group; its channels are numbered as the
  root's outputs. A channel is only as unimportant as its most important BatchNorm: its score is the
  largest |γ| among its BNs (the mean over a grouped convolution's runs first). Channels that several
  BNs read (narrowed shared channels, below) are scored by the mean |γ| of their readers instead: each
  reader uses the channel for its own branch, and the largest of six kept the residual streams wide.
- selections: a BN that reads a shared tensor and feeds one consumer, pruned for that consumer alone
  (compress.channel_select). With `shared="narrow"` there are none (but BNs that already select): the
  shared tensor's channels form one group with all its BNs, removed from the tensor and every reader at
  once, and a convolution that reads them without a BN (a pre-activation ResNet's projection shortcut) takes
  its input weights as part of their gate (`ChannelGroup.raw_readers`).

Slimming may only remove channels whose information flows through the BN scaling factors: with γ = 0
they must reach every consumer as a constant. Most groups show this in their structure (each producing
layer feeds only BNs of the group, and nothing multiplies the channels); the others are checked with
one forward each, γ of the group zeroed (`varying_consumers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from compress.channel_select import SelectionSite
from compress.request import check_shared
from compress.slimming import channels as ch
from compress.slimming.trace import trace

PRODUCERS = ("conv", "linear", "grouped")
PROBE_IMAGES = 2
COMPENSATION_IMAGES = 8
CONSUMERS = ("conv", "linear", "grouped")


@dataclass
class ChannelGroup:
    """Channels that must be removed together, named by the layer whose outputs define them."""

    root_name: str
    root: nn.Module
    bn_names: list[str]
    scores: torch.Tensor  # per root channel: max |γ| over the coupled BNs (the mean over narrowed readers)
    keep: list[int] = field(default_factory=list)
    importance: torch.Tensor | None = None  # what the threshold compared, when not the scores
    conv_groups: int = 1  # root channels per class: a grouped convolution's runs keep the same positions
    class_of: np.ndarray | None = None  # per root channel: its class
    free: torch.Tensor | None = None  # per root channel: may be removed (its class is not frozen)
    raw_readers: list[str] = field(default_factory=list)  # layers reading the channels without a BN (narrow)


@dataclass
class Selection:
    """One BN pruned for its own consumer alone (see compress.channel_select)."""

    site: SelectionSite
    scores: torch.Tensor  # per BN feature: |γ|
    keep: list[int] = field(default_factory=list)
    importance: torch.Tensor | None = None
    class_of: np.ndarray | None = None
    free: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return self.site.bn_name


@dataclass
class PruningUnits:
    """Everything one pruning decision acts on, and what was left alone with the reason."""

    analysis: "Analysis"
    groups: list[ChannelGroup]
    selections: list[Selection]
    skipped: list[dict] = field(default_factory=list)
    segments: dict = field(default_factory=dict)  # id(unit) -> class sets that must each keep one
    equal_parts: dict = field(default_factory=dict)  # id(unit) -> [parts]: class sets that keep equal counts


class Analysis:
    """Trace, channel classes and layers of one network (module references of that network)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, shared: str = "select"):
        from compress.channel_select import SelectBatchNorm2d
        from compress.slimming.sites import find_sites
        from compress.slimming.splits import bind_splits

        self.model = model
        self.trace = trace(model, example_input)
        plain = ch.build(self.trace)
        sites = find_sites(plain, ch.classes(plain))
        check_shared(shared)
        # Narrowing keeps the BNs that already select (an earlier pass made them); the others join groups.
        self.sites = sites if shared == "select" else [s for s in sites if isinstance(s.bn, SelectBatchNorm2d)]
        self.narrowed_bns = {s.bn_name for s in sites} - {s.bn_name for s in self.sites}
        self.cmap = ch.build(self.trace, cuts={s.bn for s in self.sites})
        self.split_bindings = bind_splits(self.cmap, dict(model.named_modules()))
        self.classes = ch.classes(self.cmap)
        self.layers = {layer.name: layer for layer in self.cmap.layers}

    def classes_of(self, v) -> np.ndarray:
        return self.classes.of_value(v)

    def frozen(self, cls: np.ndarray) -> np.ndarray:
        return np.array([int(c) in self.classes.frozen for c in cls], dtype=bool)


def probe_batch(example_input: torch.Tensor, n: int = PROBE_IMAGES, seed: int = 0) -> torch.Tensor:
    """A batch with varied content, so measured constants are not artefacts of one input."""
    gen = torch.Generator().manual_seed(seed)
    shape = (n, *example_input.shape[1:])
    return torch.randn(shape, generator=gen).to(example_input.device, example_input.dtype)


def pruning_units(model: nn.Module, example_input: torch.Tensor, probe: torch.Tensor | None = None, *,
                  shared: str = "select") -> PruningUnits:
    """The prunable units of `model`: BN-gated groups of coupled channels, and selection sites
    (`shared` "select") or none but those already made ("narrow")."""
    was_training = model.training
    model.eval()
    try:
        analysis = Analysis(model, example_input, shared)
        units = PruningUnits(analysis, [], [])
        _frozen_batchnorms(analysis, units)
        _groups(analysis, units)
        _selections(analysis, units)
        _constraints(analysis, units)
        if units.groups:
            from compress.slimming.gating import keep_gated

            keep_gated(model, units, probe if probe is not None else probe_batch(example_input))
    finally:
        model.train(was_training)
    return units


def _frozen_batchnorms(analysis: Analysis, units: PruningUnits) -> None:
    """A BN this code cannot prune (a subclass with state of its own, one applied twice) is named in the plan."""
    for layer in analysis.cmap.layers:
        if layer.kind == "frozen" and isinstance(layer.module, nn.modules.batchnorm._BatchNorm):
            cls = analysis.classes_of(layer.out_value)
            reason = analysis.classes.frozen.get(int(cls[0])) if len(cls) else None
            units.skipped.append({"layers": [layer.name], "channels": len(cls),
                                  "reason": reason or f"{type(layer.module).__name__} is not pruned"})


# --- groups ------------------------------------------------------------------------------------------

def _group_of_classes(analysis: Analysis) -> dict[int, int]:
    """class -> group id: classes made by one producing layer belong to one group."""
    uf: dict[int, int] = {}

    def find(a):
        while uf.setdefault(a, a) != a:
            uf[a] = uf[uf[a]]
            a = uf[a]
        return a

    for layer in analysis.cmap.layers:
        if layer.kind in PRODUCERS:
            cls = np.unique(analysis.classes_of(layer.out_value))
            for c in cls[1:]:
                ra, rb = find(int(cls[0])), find(int(c))
                if ra != rb:
                    uf[max(ra, rb)] = min(ra, rb)
    return {c: find(c) for c in list(uf)}


def _groups(analysis: Analysis, units: PruningUnits) -> None:
    group_of = _group_of_classes(analysis)
    members: dict[int, set] = {}
    for c, g in group_of.items():
        members.setdefault(g, set()).add(c)
    site_inputs = {int(c) for s in analysis.sites
                   for c in analysis.classes_of(analysis.layers[s.bn_name].in_value)}
    bns_of: dict[int, list] = {}
    for layer in analysis.cmap.layers:
        if layer.kind == "bn" and layer.module not in analysis.cmap.cuts:
            for g in {group_of.get(int(c)) for c in analysis.classes_of(layer.out_value)} - {None}:
                bns_of.setdefault(g, []).append(layer)
    for layer in analysis.cmap.layers:  # trace order: the first layer making all of a group's channels
        if layer.kind not in PRODUCERS + ("depthwise",):
            continue
        cls = analysis.classes_of(layer.out_value)
        g = group_of.get(int(cls[0])) if len(cls) else None
        if g is None or g not in members or g not in bns_of:
            continue
        if set(cls.tolist()) != members[g]:
            continue
        group_classes = members.pop(g)
        if group_classes & site_inputs:
            continue  # the shared channels stay; consumer-side selections prune them per branch
        unit = _make_group(analysis, layer, cls, bns_of[g], units)
        if unit is not None:
            units.groups.append(unit)
    for g, cls in members.items():
        if g in bns_of and not cls & site_inputs:
            units.skipped.append({"layers": sorted({b.name for b in bns_of[g]})[:3], "channels": len(cls),
                                  "reason": "no single layer makes all of their channels (a concatenation joined "
                                            "by an addition), which this code does not number"})


def _make_group(analysis: Analysis, root, cls: np.ndarray, bns: list, units: PruningUnits):
    n_root = len(cls)
    distinct = list(dict.fromkeys(cls.tolist()))
    runs = n_root // len(distinct)
    period = n_root // runs
    if runs * len(distinct) != n_root or any(cls[c] != cls[c % period] for c in range(n_root)):
        units.skipped.append({"layers": [root.name], "channels": n_root,
                              "reason": "their channels are coupled in a pattern this code does not prune"})
        return None
    scores = _class_scores(analysis, bns, distinct, mean=any(b.name in analysis.narrowed_bns for b in bns))
    frozen = analysis.frozen(cls)
    free = torch.as_tensor(~frozen)
    if frozen.any():
        reason = analysis.classes.frozen[int(cls[np.argmax(frozen)])]
        units.skipped.append({"layers": [root.name], "channels": int(frozen.sum()), "reason": reason})
        if frozen.all():
            return None
    index = {c: i for i, c in enumerate(distinct)}
    per_root = torch.tensor([scores[index[int(c)]] for c in cls], dtype=torch.float32)
    return ChannelGroup(root.name, root.module, [b.name for b in bns], per_root, conv_groups=runs,
                        class_of=cls, free=free)


def _class_scores(analysis: Analysis, bns: list, distinct: list, *, mean: bool = False) -> list[float]:
    """Per class: the mean |γ| of each BN's channels in the class, then the largest of those over its BNs
    (or with `mean`, their mean over the BNs that have the class); -1 for a class no affine BN scales."""
    index = {c: i for i, c in enumerate(distinct)}
    best = np.full(len(distinct), -1.0)
    total = np.zeros(len(distinct))
    seen = np.zeros(len(distinct))
    for layer in bns:
        bn = layer.module
        if not bn.affine:
            continue
        gamma = bn.weight.detach().abs().double().cpu().numpy()
        pos = np.array([index.get(int(c), -1) for c in analysis.classes_of(layer.out_value)])
        inside = pos >= 0
        sums = np.bincount(pos[inside], weights=gamma[inside], minlength=len(distinct))
        counts = np.bincount(pos[inside], minlength=len(distinct))
        has = counts > 0
        best[has] = np.maximum(best[has], sums[has] / counts[has])
        total[has] += sums[has] / counts[has]
        seen[has] += 1
    if not mean:
        return best.tolist()
    return np.where(seen > 0, total / np.maximum(seen, 1), -1.0).tolist()


# --- selections --------------------------------------------------------------------------------------

def _selections(analysis: Analysis, units: PruningUnits) -> None:
    for site in analysis.sites:
        layer = analysis.layers[site.bn_name]
        cls = analysis.classes_of(layer.out_value)
        frozen = analysis.frozen(cls)
        if frozen.all():
            units.skipped.append({"layers": [site.bn_name], "channels": len(cls),
                                  "reason": analysis.classes.frozen[int(cls[0])]})
            continue
        if frozen.any():
            units.skipped.append({"layers": [site.bn_name], "channels": int(frozen.sum()),
                                  "reason": analysis.classes.frozen[int(cls[np.argmax(frozen)])]})
        units.selections.append(Selection(site, site.bn.weight.detach().abs().float().cpu(), class_of=cls,
                                          free=torch.as_tensor(~frozen)))


# --- constraints on a decision -----------------------------------------------------------------------

def _unit_of_class(units: PruningUnits) -> dict[int, object]:
    return {int(c): u for u in [*units.groups, *units.selections] for c in u.class_of}


def _constraints(analysis: Analysis, units: PruningUnits) -> None:
    """Each tensor made of one unit's channels keeps at least one; equal splits keep equal parts."""
    owner = _unit_of_class(units)
    for v in analysis.trace.values:
        cls = analysis.classes_of(v)
        if not len(cls):
            continue
        us = {id(owner.get(int(c))) for c in cls}
        if len(us) == 1 and int(cls[0]) in owner:
            units.segments.setdefault(next(iter(us)), set()).add(frozenset(cls.tolist()))
    for sp in analysis.cmap.splits:
        if not sp.equal:
            continue
        src = analysis.classes_of(sp.node.inputs[0])
        parts = [frozenset(src[p.start:p.stop].tolist()) for p in sp.parts]
        us = {id(owner.get(int(c))) for c in src}
        if len(us) == 1 and int(src[0]) in owner:
            units.equal_parts.setdefault(next(iter(us)), []).append(parts)
        elif any(int(c) in owner for c in src):
            _drop_classes(units, set(src.tolist()), f"a split into equal parts in {sp.node.where} spans "
                                                    "channels of several groups")


def _drop_classes(units: PruningUnits, classes: set, reason: str) -> None:
    """Make `classes` unremovable in every unit, with the reason recorded once per unit."""
    for u in [*units.groups, *units.selections]:
        hit = np.array([int(c) in classes for c in u.class_of])
        if hit.any() and bool(u.free[torch.as_tensor(hit)].any()):
            name = u.root_name if isinstance(u, ChannelGroup) else u.name
            units.skipped.append({"layers": [name], "channels": int(hit.sum()), "reason": reason})
            u.free = u.free & torch.as_tensor(~hit)
    units.groups = [g for g in units.groups if bool(g.free.any())]
    units.selections = [s for s in units.selections if bool(s.free.any())]


def runs_floor(min_channels: int, round_to: int, runs: int) -> tuple[int, int]:
    """min_channels and round_to counted in classes of `runs` root channels each."""
    return max(1, -(-min_channels // runs)), max(1, round_to // math.gcd(round_to, runs))
