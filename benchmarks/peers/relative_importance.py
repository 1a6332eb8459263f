"""Prototype for the ablation: each channel's |γ| relative to its unit's mean, ranked globally.

The default ranks raw |γ| against one global threshold, as the paper does. In a pre-activation ResNet the
BNs that read the residual stream settle at smaller |γ| than the blocks' inner BNs (PreResNet-56 at the
`cpu` scale, plain model: 0.19–0.28 against 0.23–0.37 mean |γ|; after BNScalePruner's stage 0.06–0.18
against 0.18–0.28), so the stream goes first: on that plain model the default's prune at half the MACs
keeps 16, 32 and 96 of its 64, 128 and 256 channels. Torch-Pruning's BNScaleImportance divides each
group's scores by their mean before its global ranking (its `normalizer="mean"`), and its network at the
same MACs kept 32, 96 and 176. Dividing each unit's scores by their mean compares a channel with its own
layer rather than across layers of different scale. It lives in the benchmark, not in compress/, until
it is measured.
"""

from __future__ import annotations


def relative(unit):
    """The callable importance (compress.slimming.importance): |γ| over the unit's mean |γ|."""
    g = unit.gamma
    return g / g.mean().clamp_min(1e-12)
