"""Prototype for the ablation: the toolkit's steered proximal L1 with each γ's pull weighted by what its
channel costs in MACs (in the spirit of MorphNet's FLOP regularizer, Gordon et al., CVPR 2018).

The default pull is the same for every γ, so the channels that go are the cheap ones of the late, narrow
maps, and at equal MACs the pruned network keeps about half the parameters Torch-Pruning's do. Weighting
the shrink by cost sends the expensive channels of the wide maps first. This lives in the benchmark, not
in compress/sparsity.py, until it is measured; it uses the regularizer's steering as it is.
Sequential networks only (VGG): each BN's channel costs its convolution's output channel plus the next
convolution's input channel (or the classifier's input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from common import conv_positions
from compress import SparsityConfig, SparsityRegularizer


def channel_costs(model: nn.Module, input_size=(3, 32, 32)) -> list[torch.Tensor]:
    """MACs of one channel of each BN (in `model.modules()` order), as a per-channel tensor."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != len(bns):
        raise ValueError("cost weighting needs one BatchNorm2d after each Conv2d (a VGG-like network)")
    by_name = conv_positions(model, input_size)
    positions = {m: by_name[n] for n, m in model.named_modules() if n in by_name}
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    costs = []
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        own = conv.in_channels // conv.groups * math.prod(conv.kernel_size) * positions[conv]
        if i + 1 < len(convs):
            nxt = convs[i + 1]
            reads = nxt.out_channels * math.prod(nxt.kernel_size) * positions[nxt]
        else:
            reads = head.out_features
        costs.append(torch.full((bn.num_features,), float(own + reads)))
    return costs


def floor_of(n: int, min_keep: float, round_to: int) -> int:
    """The toolkit's per-layer floor: ceil(min_keep·n) channels rounded up to round_to, at most n."""
    return min(n, math.ceil(max(1, math.ceil(min_keep * n)) / round_to) * round_to)


class CostWeightedRegularizer(SparsityRegularizer):
    """The toolkit's regularizer, with γ ← sign(γ)·max(|γ| − lr·λ·w, 0) for per-channel weights w ≤ 1.
    The `floor` largest |γ| of each layer are not pulled: pruning keeps that many anyway, and a heavily
    weighted layer would otherwise reach zero whole and keep its floor as dead channels."""

    def __init__(self, model: nn.Module, *args, min_keep: float = 0.2, round_to: int = 1, **kwargs):
        super().__init__(model, *args, **kwargs)
        costs = channel_costs(model)
        # Scaled to at most 1: no γ is pulled harder than the default pulls all of them, so the steering,
        # which never lowers λ under its budget's, can still stop at the planned share of zeros (scaled to
        # a mean of 1, the expensive layers overshot it: 42% of γ at zero for a goal of 12%).
        top = float(torch.cat(costs).max())
        self._weights = {id(g): (c / top).to(g.device) for g, c in zip(self.gammas, costs)}
        self._floors = {id(g): floor_of(g.numel(), min_keep, round_to) for g in self.gammas}

    @torch.no_grad()
    def _shrink(self, optimizer, _args, _kwargs) -> None:
        lam, self._pending = self._pending, 0.0
        if lam <= 0:
            return
        applied = 0.0
        for group in optimizer.param_groups:
            t = group["lr"] * lam
            for p in group["params"]:
                w = self._weights.get(id(p))
                if w is not None:
                    w = w.to(p.device).clone()
                    w[torch.topk(p.abs(), self._floors[id(p)]).indices] = 0.0
                    p.copy_(torch.sign(p) * torch.clamp(p.abs() - t * w, min=0.0))
                    applied = t
        self.pull_applied += applied
        if self.adaptive:
            self._steer()


@dataclass(frozen=True)
class CostWeightedConfig(SparsityConfig):
    min_keep: float = 0.2
    round_to: int = 1

    def build(self, model: nn.Module, lrs, input_size=None) -> SparsityRegularizer:
        return CostWeightedRegularizer(model, self.strength, mode=self.mode, lrs=lrs, ramp=self.ramp,
                                       percent=self.percent, min_keep=self.min_keep, round_to=self.round_to)

    def describe(self) -> dict:
        return {**super().describe(), "weights": "MACs per channel, floor not pulled (benchmarks/peers/cost_weighted.py)",
                "min_keep": self.min_keep, "round_to": self.round_to}


def percent_for(model: nn.Module, macs_fraction: float, *, min_keep: float, round_to: int) -> float:
    """The share of channels to hold at zero so that, removing the most expensive channels first within
    each layer's floor, the network keeps `macs_fraction` of its MACs: the goal to steer the weighted
    penalty to (its zeros then are about what a MACs budget removes)."""
    costs = channel_costs(model)
    total_channels = sum(c.numel() for c in costs)
    per_layer = []
    for c in costs:
        per_layer.append((float(c[0]), c.numel() - floor_of(c.numel(), min_keep, round_to)))
    full = sum(float(c.sum()) for c in costs) / 2  # each MAC is counted by the channel on either side
    need, removed = (1 - macs_fraction) * full, 0
    for cost, room in sorted(per_layer, reverse=True):
        take = min(room, math.ceil(max(0.0, need) / cost))
        removed += take
        need -= take * cost
        if need <= 0:
            break
    return removed / total_channels
