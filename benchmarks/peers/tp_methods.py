"""Torch-Pruning's methods, set up the way its own CIFAR benchmark runs them, on our stage layout.

Each method trains a second stage from the shared plain model (with the method's own regularizer, or
plainly for L1 magnitude pruning), prunes once by one global ranking to the toolkit's MACs, and
fine-tunes. Training goes through `compress.training.fit`, so optimizer, schedule, augmentation and data
order are the toolkit's own; only the regularizer and the pruning step are Torch-Pruning's.

Two things are added on top of Torch-Pruning, both to give every method the same constraints:
- a per-layer floor equal to the toolkit's (`min_keep` of each layer, rounded up to `round_to`):
  Torch-Pruning's `max_pruning_ratio` is only checked before a step, so a single global step can
  empty a layer; the floor is applied by ranking each group's top channels above every other;
- the pruning ratio is searched so that the pruned network's MACs match a target (the toolkit's).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from compress import SparsityRegularizer


@dataclass(frozen=True)
class Method:
    """One Torch-Pruning method: its pruner class, importance, and regularization (None: no sparse stage)."""

    label: str
    pruner: type
    importance: object  # a zero-argument factory of a tp importance
    reg: float | None


METHODS = {
    "tp-bnscale": Method("TP BNScalePruner, reg 1e-4", tp.pruner.BNScalePruner,
                         lambda: tp.importance.BNScaleImportance(), 1e-4),
    "tp-groupnorm": Method("TP GroupNormPruner, reg 5e-4", tp.pruner.GroupNormPruner,
                           lambda: tp.importance.GroupMagnitudeImportance(p=2), 5e-4),
    "tp-l1": Method("TP MagnitudePruner L1, no sparse stage", tp.pruner.MagnitudePruner,
                    lambda: tp.importance.MagnitudeImportance(p=1), None),
}

# The search stops once the MACs are this close to the target; a match within MATCH_TOLERANCE is accepted.
SEARCH_STOP = 0.002
MATCH_TOLERANCE = 0.01
SEARCH_STEPS = 30


def classifier_of(model: nn.Module, num_classes: int) -> nn.Module:
    """The output layer (kept whole, as Torch-Pruning's benchmark does): the last Linear with one output
    per class."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not heads:
        raise ValueError(f"{type(model).__name__} has no Linear layer with {num_classes} outputs to keep")
    return heads[-1]


def count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, params) by torch_pruning.utils.count_ops_and_params: the one counter used for every method.
    It counts convolutions and linear layers and also BN, activations and pooling."""
    was_training = model.training
    model.eval()
    try:
        macs, params = tp.utils.count_ops_and_params(model, example)
    finally:
        model.train(was_training)
    return int(macs), int(params)


class TPRegularizer(SparsityRegularizer):
    """Torch-Pruning's `pruner.regularize(model)` where `fit` calls the toolkit's regularizer: after
    backward, before the optimizer step (as Torch-Pruning's benchmark does). Its own λ stays 0, so only
    Torch-Pruning's term acts; the inherited record() still logs how polarized the BN γ are."""

    def __init__(self, model: nn.Module, pruner, name: str, reg: float):
        super().__init__(model, 0.0)
        self._model, self._pruner, self._name, self._reg = model, pruner, name, reg

    @torch.no_grad()
    def step(self, optimizer=None) -> None:
        self.step_index += 1
        self._pruner.regularize(self._model)

    def record(self) -> dict:
        return {**super().record(), "sparsity_mode": f"torch-pruning {self._name}", "sparsity_lambda": self._reg}


def regularizer(method: str, model: nn.Module, example: torch.Tensor, num_classes: int):
    """The method's sparse-stage regularizer for `fit`, or 0.0 (no penalty) for a method without one."""
    m = METHODS[method]
    if m.reg is None:
        return 0.0
    pruner = m.pruner(model, example, importance=m.importance(), reg=m.reg, global_pruning=True,
                      ignored_layers=[classifier_of(model, num_classes)])
    pruner.update_regularizer()
    return TPRegularizer(model, pruner, method, m.reg)


class FloorImportance:
    """A Torch-Pruning importance whose top channels of every group rank above all others, so that a
    global ranking never takes a layer under the toolkit's floor: ceil(min_keep·n) channels of the layer's
    original width n, rounded up to `round_to` (Torch-Pruning rounds the kept count down to `round_to`,
    which keeps this many). `widths` ({module name: original channels}) and `names` ({module: name}) give
    the original widths once a model has been pruned; without them the current width is used."""

    def __init__(self, base, min_keep: float, round_to: int, widths: dict | None = None, names: dict | None = None):
        self.base, self.min_keep, self.round_to = base, min_keep, max(1, int(round_to))
        self.widths, self.names = widths or {}, names or {}

    def floor(self, n: int) -> int:
        keep = max(1, math.ceil(self.min_keep * n))
        return min(n, math.ceil(keep / self.round_to) * self.round_to)

    def __call__(self, group):
        imp = self.base(group)
        if imp is None:
            return None
        imp = imp.clone().float()
        original = self.widths.get(self.names.get(group[0].dep.target.module), imp.numel())
        top = torch.topk(imp, min(imp.numel(), self.floor(original))).indices
        imp[top] = math.inf
        return imp


def widths_of(model: nn.Module) -> dict[str, int]:
    """Output channels of every convolution and linear layer, by module name: the floors' reference."""
    return {name: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _pruner(method: str, model: nn.Module, example, ratio: float, *, min_keep: float, round_to: int,
            num_classes: int, widths: dict | None = None):
    m = METHODS[method]
    kwargs = {"reg": m.reg} if m.reg is not None else {}
    names = {module: name for name, module in model.named_modules()}
    importance = FloorImportance(m.importance(), min_keep, round_to, widths, names)
    return m.pruner(model, example, importance=importance, global_pruning=True, pruning_ratio=ratio,
                    round_to=round_to if round_to > 1 else None,
                    ignored_layers=[classifier_of(model, num_classes)], **kwargs)


def _largest_ratio(pruner) -> float:
    """The largest pruning ratio that leaves every group at its floor or above: the share of channels
    whose importance is finite (Torch-Pruning counts the ratio over all groups' channels)."""
    finite = total = 0
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):
        imp = pruner.estimate_importance(group)
        if imp is None:
            continue
        total += imp.numel()
        finite += int(torch.isfinite(imp).sum())
    return max(0.0, finite / max(total, 1) - 1e-6)


def prune(method: str, model: nn.Module, example: torch.Tensor, ratio: float, *, min_keep: float, round_to: int,
          num_classes: int, blocks: list | None = None) -> nn.Module:
    """Prune `model` in place with the method's importance at `ratio` (global ranking, floor kept), then
    remove the recorded `blocks` ([module name, channel indices]) that `match_macs` added."""
    widths = widths_of(model)
    _pruner(method, model, example, ratio, min_keep=min_keep, round_to=round_to, num_classes=num_classes,
            widths=widths).step()
    for name, idxs in blocks or []:
        remove_block(model, example, name, idxs)
    return model


def remove_block(model: nn.Module, example: torch.Tensor, name: str, idxs: list[int]) -> None:
    """Remove output channels `idxs` of layer `name` with everything Torch-Pruning couples to them."""
    module = model.get_submodule(name)
    fn = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    group = graph.get_pruning_group(module, fn, idxs)
    if not graph.check_pruning_group(group):
        raise ValueError(f"removing channels {idxs} of {name} would empty a layer")
    group.prune()


def least_important_blocks(method: str, model: nn.Module, example: torch.Tensor, widths: dict, *,
                           min_keep: float, round_to: int, num_classes: int) -> list[tuple]:
    """Per group, its `round_to` least important channels above the floor, as (the importance at which a
    global threshold would take them, module name, indices), least important first."""
    pruner = _pruner(method, model, example, 0.0, min_keep=min_keep, round_to=round_to, num_classes=num_classes,
                     widths=widths)
    names = {module: name for name, module in model.named_modules()}
    blocks = []
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):
        imp = pruner.estimate_importance(group)
        if imp is None or imp.numel() <= round_to:
            continue
        take = torch.argsort(imp)[:round_to]
        if torch.isfinite(imp[take]).all():
            blocks.append((float(imp[take].max()), names[group[0].dep.target.module], sorted(int(i) for i in take)))
    return sorted(blocks)


def _bisect(method, model, example, target_macs, **floor) -> list[dict]:
    probe = _pruner(method, copy.deepcopy(model), example, 0.0, **floor)
    lo, hi = 0.0, _largest_ratio(probe)
    candidates = []
    for _ in range(SEARCH_STEPS):
        ratio = (lo + hi) / 2
        trial = prune(method, copy.deepcopy(model), example, ratio, **floor)
        macs, params = count(trial, example)
        candidates.append({"ratio": ratio, "blocks": [], "macs": macs, "params": params,
                           "error": macs / target_macs - 1})
        if abs(candidates[-1]["error"]) <= SEARCH_STOP:
            break
        if macs > target_macs:
            lo = ratio
        else:
            hi = ratio
    return candidates


def _top_up(method, model, example, target_macs, start: dict, **floor) -> dict:
    """From a candidate above the target, remove whole `round_to` blocks, least important first (skipping
    any that would go more than MATCH_TOLERANCE under the target), until the MACs are within SEARCH_STOP:
    the global ranking at block granularity, where one more step of the threshold jumps past the target."""
    widths = widths_of(model)
    current = prune(method, copy.deepcopy(model), example, start["ratio"], **floor)
    blocks, macs, params = [], start["macs"], start["params"]
    while macs > target_macs * (1 + SEARCH_STOP):
        for _, name, idxs in least_important_blocks(method, current, example, widths, **floor):
            trial = copy.deepcopy(current)
            remove_block(trial, example, name, idxs)
            t_macs, t_params = count(trial, example)
            if t_macs >= target_macs * (1 - MATCH_TOLERANCE):
                current, macs, params = trial, t_macs, t_params
                blocks.append([name, idxs])
                break
        else:
            break
    return {"ratio": start["ratio"], "blocks": blocks, "macs": macs, "params": params,
            "error": macs / target_macs - 1}


def match_macs(method: str, model: nn.Module, example: torch.Tensor, target_macs: int, *, min_keep: float,
               round_to: int, num_classes: int) -> dict:
    """The pruning of a copy of `model` whose MACs are closest to `target_macs`: the ratio is bisected
    (Torch-Pruning's global ranking); when the rounding makes the ranking jump past the target, whole
    blocks are then removed from the closest pruning above it, least important first. Returns {"ratio",
    "blocks", "macs", "params", "error", "matched", "candidates"}."""
    floor = dict(min_keep=min_keep, round_to=round_to, num_classes=num_classes)
    candidates = _bisect(method, model, example, target_macs, **floor)
    best = min(candidates, key=lambda c: abs(c["error"]))
    above = [c for c in candidates if c["macs"] > target_macs]
    if abs(best["error"]) > SEARCH_STOP and above:
        topped = _top_up(method, model, example, target_macs, min(above, key=lambda c: c["macs"]), **floor)
        candidates.append(topped)
        best = min(candidates, key=lambda c: abs(c["error"]))
    return {**best, "matched": abs(best["error"]) <= MATCH_TOLERANCE, "candidates": candidates}
