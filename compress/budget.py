"""Pruning to a budget: the global threshold that keeps a fraction of the unpruned MACs or parameters.

The cost of a candidate decision is computed, not measured: every Conv2d, Linear and BatchNorm2d's
new width follows from the kept channels of the groups and selections that touch it (the same
channel classes that the removal reads, compress.slimming.channels), and MACs follow the rules of compress.measure (Conv2d and
Linear only, per image, output positions recorded once with hooks). That is exact except for biases
that β compensation may add to bias-free layers: those are counted wherever compensation could add
one, so the estimate bounds the parameters from above. The plan records the budget met as measured on
the pruned network.

Cost-aware importance (`cost_aware=True`) divides each channel's score by its share of the cost: its
MACs (or parameters, for a parameter budget) relative to the mean channel's. Channels of large early
feature maps then go before cheap late ones of equal γ, in the spirit of latency-aware pruning (HALP,
Shen et al., NeurIPS 2022), with the budget's own cost standing in for latency.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from torch import nn

from compress.errors import CompressError

TARGETS = ("macs", "params")


def _is_depthwise(m: nn.Conv2d) -> bool:
    return m.groups > 1 and m.groups == m.in_channels == m.out_channels


class CostModel:
    """MACs and parameters of `model` after removing the channels that `units` would remove."""

    def __init__(self, model: nn.Module, units, example_input: torch.Tensor, *, compensate: bool = True):
        self.units = units
        self.positions: dict[nn.Module, int] = {}

        def record(mod, _inp, out):
            # Summed over calls: a layer run twice (a block shared by two resolutions) costs both runs, as
            # compress.measure counts them.
            self.positions[mod] = self.positions.get(mod, 0) + (
                out[0].numel() // out.shape[1] if isinstance(mod, nn.Conv2d) else out[0].numel() // out.shape[-1])

        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
        hooks = [m.register_forward_hook(record) for m in layers if not isinstance(m, nn.BatchNorm2d)]
        try:
            with torch.no_grad():
                model(example_input[:1])
        finally:
            for h in hooks:
                h.remove()
        self.layers = [m for m in layers if isinstance(m, nn.BatchNorm2d) or m in self.positions]
        counted = sum(p.numel() for m in self.layers for p in m.parameters(recurse=False))
        self.fixed_params = sum(p.numel() for p in model.parameters()) - counted
        analysis = units.analysis
        traced = {layer.module: layer for layer in analysis.cmap.layers if layer.kind != "frozen"}
        # Per layer: the classes of its output and input channels (None: untouched by any decision).
        self.sides = {}
        for m in self.layers:
            layer = traced.get(m)
            if layer is None:
                continue
            out = analysis.classes_of(layer.out_value)
            inp = None if layer.kind in ("bn", "depthwise") else analysis.classes_of(layer.in_value)
            self.sides[m] = (out, inp)
        # β compensation gives a bias-free layer that loses inputs a bias, unless its only reader is a BN
        # (whose running mean takes the offset instead): count it, so a parameter budget holds.
        self.gains_bias = set()
        if compensate:
            for m, layer in traced.items():
                readers = layer.out_value.readers
                sole_bn = len(readers) == 1 and readers[0].op == "layer" and isinstance(readers[0].module, nn.BatchNorm2d)
                if layer.kind in ("conv", "linear") and m.bias is None and not sole_bn:
                    self.gains_bias.add(m)
        self.full = self.cost(None)

    # -- cost of a decision ---------------------------------------------------------------------------

    def removed_mask(self, keeps) -> np.ndarray | None:
        """Classes removed by `keeps` (group keeps, selection keeps), as a mask over class ids."""
        if keeps is None:
            return None
        mask = np.zeros(self.units.analysis.cmap.size, dtype=bool)
        group_keeps, selection_keeps = keeps
        for u, keep in zip([*self.units.groups, *self.units.selections], [*group_keeps, *selection_keeps]):
            cls = u.class_of
            kept = np.zeros(len(cls), dtype=bool)
            kept[np.asarray(keep, dtype=np.int64)] = True
            mask[cls[~kept]] = True
            mask[cls[kept]] = False
        return mask

    def cost(self, keeps) -> dict:
        """{"macs": ..., "params": ...} after the removal that `keeps` (group keeps, selection keeps) describes."""
        mask = self.removed_mask(keeps)
        macs, params = 0, self.fixed_params
        for m in self.layers:
            out_gone = in_gone = 0
            if mask is not None and m in self.sides:
                out_cls, in_cls = self.sides[m]
                out_gone = int(mask[out_cls].sum())
                in_gone = int(mask[in_cls].sum()) if in_cls is not None else 0
            if isinstance(m, nn.BatchNorm2d):
                params += (m.num_features - out_gone) * (2 if m.affine else 0)
            elif isinstance(m, nn.Conv2d):
                out = m.out_channels - out_gone
                per_group_in = 1 if _is_depthwise(m) else (m.in_channels - in_gone) // m.groups
                k = m.kernel_size[0] * m.kernel_size[1]
                macs += out * per_group_in * k * self.positions[m]
                params += out * per_group_in * k + (out if self._has_bias(m, in_gone) else 0)
            else:
                out, inp = m.out_features - out_gone, m.in_features - in_gone
                macs += out * inp * self.positions[m]
                params += out * inp + (out if self._has_bias(m, in_gone) else 0)
        return {"macs": macs, "params": params}

    def _has_bias(self, m: nn.Module, in_gone: int) -> bool:
        # An upper bound: compensation adds no bias where the removed inputs were exactly zero.
        return m.bias is not None or (in_gone > 0 and m in self.gains_bias)

    # -- per-channel cost, for cost-aware importance --------------------------------------------------

    def _unit_cost(self, m: nn.Module, side: str, target: str) -> float:
        if isinstance(m, nn.BatchNorm2d):
            return 0.0 if target == "macs" else 2.0
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            if _is_depthwise(m):
                per = k if side == "out" else 0.0  # in and out leave together: count once
            elif side == "out":
                per = m.in_channels // m.groups * k
            else:
                per = m.out_channels // m.groups * k
            return per * (self.positions[m] if target == "macs" else 1)
        per = m.in_features if side == "out" else m.out_features
        return per * (self.positions[m] if target == "macs" else 1)

    def channel_costs(self, target: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per unit and root channel, the `target` cost removing that channel alone saves (first order)."""
        per_class: dict[int, float] = defaultdict(float)
        for m, (out_cls, in_cls) in self.sides.items():
            for side, cls in (("out", out_cls), ("in", in_cls)):
                if cls is None:
                    continue
                unit = self._unit_cost(m, side, target)
                values, counts = np.unique(cls, return_counts=True)
                for c, n in zip(values.tolist(), counts.tolist()):
                    per_class[c] += unit * n
        costs = []
        for u in [*self.units.groups, *self.units.selections]:
            runs = getattr(u, "conv_groups", 1)
            costs.append(torch.tensor([per_class[c] / runs for c in u.class_of.tolist()], dtype=torch.float64))
        n = len(self.units.groups)
        return costs[:n], costs[n:]


def cost_aware_scores(costs: CostModel, target: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each unit's scores divided by its channels' cost relative to the mean channel's cost."""
    group_costs, selection_costs = costs.channel_costs(target)
    everything = torch.cat([*group_costs, *selection_costs])
    mean = float(everything.mean()) if everything.numel() else 1.0
    floor = 1e-6 * mean  # a channel that costs nothing is kept on γ alone, not divided by zero
    scale = lambda s, c: (s.double() / (c.clamp_min(floor) / mean)).float()  # noqa: E731
    return ([scale(g.scores, c) for g, c in zip(costs.units.groups, group_costs)],
            [scale(s.scores, c) for s, c in zip(costs.units.selections, selection_costs)])


def search_threshold(costs: CostModel, target: str, fraction: float, choose, scores) -> tuple[float, dict]:
    """The lowest threshold whose decision keeps at most `fraction` of the full `target` cost.

    `choose(unit, unit_scores, threshold)` picks one unit's kept channels (floor, rounding and the
    graph's demands included); `scores` is (group scores, selection scores), in the units' order. Bisection over the sorted distinct scores: the cost
    can only fall as the threshold rises, so the first feasible threshold prunes least.
    """
    if target not in TARGETS:
        raise CompressError(f"budget target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not 0.0 < fraction < 1.0:
        raise CompressError(f"target_{target} must be a fraction in (0, 1), got {fraction}")
    group_scores, selection_scores = scores
    candidates = torch.unique(torch.cat([*group_scores, *selection_scores]).float()).tolist()
    budget = fraction * costs.full[target]

    groups, selections = costs.units.groups, costs.units.selections

    def keeps_at(thr):
        return ([choose(u, s, thr) for u, s in zip(groups, group_scores)],
                [choose(u, s, thr) for u, s in zip(selections, selection_scores)])

    lo, hi = 0, len(candidates) - 1
    last = keeps_at(candidates[hi])
    lowest = costs.cost(last)[target]
    if lowest > budget:
        raise CompressError(f"target_{target} {fraction:g} cannot be met: the floor (min_keep, min_channels) "
                            f"and rounding keep at least {lowest / costs.full[target]:.3f} of the {target}")
    while lo < hi:
        mid = (lo + hi) // 2
        if costs.cost(keeps_at(candidates[mid]))[target] <= budget:
            hi = mid
        else:
            lo = mid + 1
    thr = candidates[lo]
    return thr, {"keeps": keeps_at(thr), "estimate": costs.cost(keeps_at(thr))}
