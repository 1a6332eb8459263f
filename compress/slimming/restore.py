"""Putting a model back as it came: each module's own train/eval flag, kept across work that sets the whole
model's (a BN frozen inside a training model stays frozen), and after a failed pruning its own module,
parameter and buffer objects with their values."""

from __future__ import annotations

import torch
from torch import nn


def modes_of(model: nn.Module) -> dict:
    return {m: m.training for m in model.modules()}


def put_modes(model: nn.Module, modes: dict) -> None:
    """Each module's own train/eval flag as in `modes` (a frozen BN in a training model stays frozen); a
    module pruning added takes the model's."""
    top = modes.get(model, model.training)
    for m in model.modules():
        m.training = modes.get(m, top)


def objects_of(model: nn.Module) -> dict:
    """Every module's attributes as they are now, with its own parameter, buffer and child tables copied
    (surgery sets attributes, which changes those tables in place)."""
    tables = ("_parameters", "_buffers", "_modules")
    return {m: {k: dict(v) if k in tables else v for k, v in m.__dict__.items()} for m in model.modules()}


def put_back(model: nn.Module, original: dict, backup: nn.Module) -> None:
    """After a failure: the caller's own module, parameter and buffer objects (an optimizer built on the
    model holds them), their values as they were (compensation adds to biases in place), and their modes
    (each module's `training` is one of the attributes `objects_of` kept)."""
    for module, attributes in original.items():
        module.__dict__.clear()
        module.__dict__.update(attributes)
    with torch.no_grad():
        model.load_state_dict(backup.state_dict())
