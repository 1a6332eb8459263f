"""Pruning to a budget: the global threshold that keeps a fraction of the unpruned MACs or parameters.

The cost of a candidate decision is computed, not measured: every Conv2d, Linear and BatchNorm2d's
new width follows from the kept channels of the groups and selections that touch it (the same
torch-pruning groups that will remove them), and MACs follow the rules of compress.measure (Conv2d and
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
            self.positions[mod] = out[0].numel() // out.shape[1] if isinstance(mod, nn.Conv2d) else \
                out[0].numel() // out.shape[-1]

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
        graph = units.graph
        self.group_items = []  # per group: (module, side, idxs, root_idxs), side "out" or "in"
        for g in units.groups:
            items = []
            for item in graph.get_pruning_group(g.root, g.root_fn, list(range(g.scores.numel()))):
                mod = item.dep.target.module
                if not isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
                    continue
                side = "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in"
                items.append((mod, side, torch.as_tensor(item.idxs, dtype=torch.long),
                              torch.as_tensor(item.root_idxs, dtype=torch.long)))
            self.group_items.append(items)
        # β compensation gives a bias-free layer that loses inputs a bias, unless its only reader is a BN
        # (whose running mean takes the offset instead): count it, so a parameter budget holds.
        self.gains_bias = set()
        if compensate:
            for m in self.layers:
                node = graph.module2node.get(m)
                readers = [n.module for n in node.outputs] if node is not None else []
                sole_bn = len(readers) == 1 and isinstance(readers[0], nn.BatchNorm2d)
                grouped = isinstance(m, nn.Conv2d) and m.groups != 1
                if not isinstance(m, nn.BatchNorm2d) and m.bias is None and not sole_bn and not grouped:
                    self.gains_bias.add(m)
        self.full = self.cost(None)

    # -- cost of a decision ---------------------------------------------------------------------------

    def _removed(self, keeps) -> dict:
        removed = defaultdict(set)
        if keeps is None:
            return removed
        group_keeps, selection_keeps = keeps
        for g, items, keep in zip(self.units.groups, self.group_items, group_keeps):
            gone = torch.ones(g.scores.numel(), dtype=torch.bool)
            gone[torch.as_tensor(keep, dtype=torch.long)] = False
            for mod, side, idxs, root_idxs in items:
                removed[(mod, side)].update(idxs[gone[root_idxs]].tolist())
        for s, keep in zip(self.units.selections, selection_keeps):
            gone = set(range(s.scores.numel())) - set(keep)
            removed[(s.site.bn, "out")].update(gone)
            removed[(s.site.consumer, "in")].update(gone)
        return removed

    def cost(self, keeps) -> dict:
        """{"macs": ..., "params": ...} after the removal that `keeps` (group keeps, selection keeps) describes."""
        removed = self._removed(keeps)
        macs, params = 0, self.fixed_params
        for m in self.layers:
            out_gone, in_gone = len(removed[(m, "out")]), len(removed[(m, "in")])
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

    def channel_costs(self, target: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per unit and channel, the `target` cost removing that channel alone saves (first order)."""

        def unit_cost(m: nn.Module, side: str) -> float:
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

        group_costs = []
        for g, items in zip(self.units.groups, self.group_items):
            c = torch.zeros(g.scores.numel(), dtype=torch.float64)
            for mod, side, idxs, root_idxs in items:
                c.index_add_(0, root_idxs, torch.full((root_idxs.numel(),), unit_cost(mod, side), dtype=torch.float64))
            group_costs.append(c)
        selection_costs = []
        for s in self.units.selections:
            per = unit_cost(s.site.consumer, "in") + unit_cost(s.site.bn, "out")
            selection_costs.append(torch.full((s.scores.numel(),), per, dtype=torch.float64))
        return group_costs, selection_costs


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

    `choose(unit_scores, threshold)` picks one unit's kept channels (floor and rounding included);
    `scores` is (group scores, selection scores). Bisection over the sorted distinct scores: the cost
    can only fall as the threshold rises, so the first feasible threshold prunes least.
    """
    if target not in TARGETS:
        raise CompressError(f"budget target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not 0.0 < fraction < 1.0:
        raise CompressError(f"target_{target} must be a fraction in (0, 1), got {fraction}")
    group_scores, selection_scores = scores
    candidates = torch.unique(torch.cat([*group_scores, *selection_scores]).float()).tolist()
    budget = fraction * costs.full[target]

    def keeps_at(thr):
        return ([choose(s, thr) for s in group_scores], [choose(s, thr) for s in selection_scores])

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
