"""Each module comes back in its own train/eval mode from pruning, refused or not (compress.slimming.restore)."""

import pytest
import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.errors import CompressError
from compress.models import create_model

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _vgg():
    return randomize_bn(create_model("vgg11", width=0.125), seed=4)


def _frozen_parts():
    """A training model with its first BN and its dropout frozen, as when fine-tuning."""
    model = _vgg().train()
    frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][:1]
    frozen += [m for m in model.modules() if isinstance(m, nn.Dropout)][:1]
    for m in frozen:
        m.eval()
    return model, {name: m.training for name, m in model.named_modules()}


def test_each_module_keeps_its_own_mode_whether_pruning_succeeds_or_is_refused():
    """Both paths ran model.train(was_training): a frozen BN came back training, and its statistics moved
    at the next step."""
    model, modes = _frozen_parts()
    assert not all(modes.values())
    slimming.prune(model, 0.5, EXAMPLE)
    assert {name: m.training for name, m in model.named_modules()} == modes
    model, modes = _frozen_parts()
    with pytest.raises(CompressError, match="cannot be met"):
        slimming.prune(model, None, EXAMPLE, target_macs=1e-6)
    assert {name: m.training for name, m in model.named_modules()} == modes
    model, modes = _frozen_parts()
    assert slimming.least_budget(model, EXAMPLE) < 1
    assert {name: m.training for name, m in model.named_modules()} == modes  # it left every module in eval
