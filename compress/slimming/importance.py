"""What decides which channels go: the importance of each channel of each unit.

`importance=` in compress.slimming.prune takes
- None or "gamma": |γ|, the largest over the BNs a channel is coupled to (network slimming), the mean over
  the BNs that read a narrowed shared channel (compress.slimming.units);
- "cost": |γ| divided by the channel's share of the budget's cost (its MACs, or parameters, against the
  mean channel's), for `target_macs` / `target_params` (compress.budget; `cost_aware=True` is an alias);
- a Torch-Pruning importance (an instance of `torch_pruning.importance.Importance`, such as
  `tp.importance.MagnitudeImportance(p=1)`): it receives a Torch-Pruning group built from the unit;
- any callable `importance(unit: Unit) -> torch.Tensor`.

A callable receives one `Unit` at a time and returns a 1-D tensor of `unit.channels` finite numbers,
higher meaning more important. A unit is a group of coupled channels (numbered as its root layer's
outputs) or a consumer-side selection (numbered as its BN's features). Channels of one class (a grouped
convolution's runs) are decided together, on the mean of their scores. Every unit is compared with one
global threshold: `percent` removes that fraction of all the units' channels (with |γ|, as in the paper,
of every BN's γ), a budget finds the lowest threshold that meets it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from compress.errors import CompressError


@dataclass(frozen=True)
class Layer:
    """One layer a unit's channels touch: `index[i]` is the layer's channel for unit channel `root[i]`."""

    name: str
    module: nn.Module
    role: str  # "out" (it makes the channels), "in" (it reads them), "bn" (it scales them)
    index: torch.Tensor
    root: torch.Tensor


@dataclass(frozen=True)
class Unit:
    """What an importance callable sees of one unit."""

    name: str  # the root layer of a group, the BN of a selection
    kind: str  # "group" or "selection"
    channels: int
    gamma: torch.Tensor  # the default importance: max |γ| per channel (mean over narrowed readers)
    layers: tuple[Layer, ...]
    model: nn.Module


def resolve(importance, cost_aware: bool):
    """The importance to use: refuses what is neither a name, a callable nor a Torch-Pruning importance."""
    if cost_aware:
        if importance not in (None, "cost"):
            raise CompressError("give cost_aware=True or an importance, not both (cost_aware is importance='cost')")
        return "cost"
    if importance in (None, "gamma", "cost"):
        return importance or "gamma"
    if isinstance(importance, str) or not callable(importance):
        raise CompressError(f"importance must be 'gamma', 'cost', a callable or a Torch-Pruning importance, "
                            f"got {importance!r}")
    return importance


def unit_view(units, unit, model: nn.Module) -> Unit:
    from compress.slimming.units import ChannelGroup

    analysis = units.analysis
    classes = unit.class_of.tolist()
    first_root = {}
    for i, c in enumerate(classes):
        first_root.setdefault(c, i)
    layers = []
    modules = dict(model.named_modules())
    for layer in analysis.cmap.layers:
        sides = {"bn": layer.out_value} if layer.kind == "bn" else \
            {"out": layer.out_value, "in": layer.in_value} if layer.kind in ("conv", "linear", "grouped") else \
            {"out": layer.out_value} if layer.kind == "depthwise" else {}
        for role, v in sides.items():
            cls = analysis.classes_of(v).tolist()
            idx = [i for i, c in enumerate(cls) if c in first_root]
            if idx:
                layers.append(Layer(layer.name, modules[layer.name], role, torch.as_tensor(idx),
                                    torch.as_tensor([first_root[cls[i]] for i in idx])))
    kind = "group" if isinstance(unit, ChannelGroup) else "selection"
    name = unit.root_name if kind == "group" else unit.name
    return Unit(name, kind, len(classes), unit.scores.clone(), tuple(layers), model)


def scores_of(importance, units, model: nn.Module) -> None:
    """Store a custom importance's scores on every unit (unit.importance), checked."""
    for unit in [*units.groups, *units.selections]:
        view = unit_view(units, unit, model)
        score = _tp_score(importance, view) if _is_tp(importance) else importance(view)
        if not isinstance(score, torch.Tensor):
            raise CompressError(f"importance returned {type(score).__name__} for {view.name}; it must return a "
                                f"tensor of {view.channels} scores")
        score = score.detach().float().cpu().flatten()
        if score.numel() != view.channels or not bool(torch.isfinite(score).all()):
            raise CompressError(f"importance for {view.name} must be {view.channels} finite scores, got "
                                f"{score.numel()} {'(not all finite)' if score.numel() == view.channels else ''}")
        unit.importance = score


def _is_tp(importance) -> bool:
    # A Torch-Pruning importance can only exist if torch_pruning is imported; importing it otherwise
    # would cost seconds for nothing.
    tp = sys.modules.get("torch_pruning")
    return tp is not None and isinstance(importance, tp.importance.Importance)


def _tp_score(importance: Callable, unit: Unit) -> torch.Tensor:
    """Build a Torch-Pruning group (root first, full indices) from the unit and score it."""
    from torch_pruning.dependency import Dependency, Group
    from torch_pruning.dependency.node import Node
    from torch_pruning.pruner import function

    fns = {("out", nn.Conv2d): function.prune_conv_out_channels, ("in", nn.Conv2d): function.prune_conv_in_channels,
           ("out", nn.Linear): function.prune_linear_out_channels, ("in", nn.Linear): function.prune_linear_in_channels}
    group = Group()
    items = sorted(unit.layers, key=lambda layer: (layer.name != unit.name, layer.role != "out"))
    for layer in items:
        if layer.role == "bn":
            fn = function.prune_batchnorm_out_channels
        else:
            fn = fns.get((layer.role, nn.Linear if isinstance(layer.module, nn.Linear) else nn.Conv2d))
        node = Node(layer.module, None, layer.name)
        group.add_dep(Dependency(fn, fn, node, node), layer.index.tolist())
        group[len(group) - 1].root_idxs = layer.root.tolist()
    score = importance(group)
    if score is None:
        raise CompressError(f"the Torch-Pruning importance gave no score for {unit.name} (no layer it reads)")
    return score[:unit.channels] if score.numel() >= unit.channels else score
