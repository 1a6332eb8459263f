"""BatchNorm γ as network slimming reads them, the global threshold, and re-estimating BN statistics."""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import CompressError


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers whose γ the sparsity penalty acts on: all of them, as in the paper."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]


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


def quantile_threshold(scores: list[torch.Tensor], percent: float) -> float:
    """The same rule over any importance: the score at index int(percent·N) of all units' channels."""
    everything = torch.cat([s.float().flatten() for s in scores]).sort().values
    k = min(int(percent * everything.numel()), everything.numel() - 1)
    return float(everything[k])


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
