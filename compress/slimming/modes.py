"""Each module's own train/eval flag, kept across work that sets the whole model's (a BN frozen inside a
training model stays frozen)."""

from __future__ import annotations

from torch import nn


def modes_of(model: nn.Module) -> dict:
    return {m: m.training for m in model.modules()}


def put_modes(model: nn.Module, modes: dict) -> None:
    """Each module's own train/eval flag as in `modes` (a frozen BN in a training model stays frozen); a
    module pruning added takes the model's."""
    top = modes.get(model, model.training)
    for m in model.modules():
        m.training = modes.get(m, top)
