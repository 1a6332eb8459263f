"""What each unit keeps: rounding no unit can honour is refused; plans replay, also those that name a group
by another of its layers (as plans written before this engine did), and never split what must go together."""

import copy

import pytest
import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.errors import CompressError
from compress.measure import layer_widths
from compress.models import create_model

EXAMPLE = torch.zeros(1, 3, 32, 32)


def test_round_to_larger_than_every_unit_is_refused_naming_the_bound():
    """--round-to 1000000000 exited 0 having pruned nothing."""
    with pytest.raises(CompressError, match=r"^round_to 1000000000 \(--round-to\) is larger than every prunable unit "
                                            r"\(the widest has 128 channels\): nothing could be pruned; use a round_to of "
                                            r"at most 128$"):
        slimming.prune(randomize_bn(create_model("vgg11", width=0.25)), 0.5, EXAMPLE, round_to=1_000_000_000)


def test_a_plan_naming_a_group_by_another_of_its_layers_replays_the_same_channels():
    """torch-pruning named resnet18's downsampling groups by their shortcut convolution (layer2.0.downsample.0),
    this engine by the first layer that makes them (layer2.0.conv2): both plans give one network."""
    model = randomize_bn(create_model("resnet18"), seed=2)
    pruned, plan = slimming.prune(copy.deepcopy(model), 0.4, EXAMPLE, min_keep=0.1)
    old = copy.deepcopy(plan)
    renamed = 0
    for g in old["groups"]:
        if g["root"].endswith(".conv2") and g["root"].replace("conv2", "downsample.0") in dict(model.named_modules()):
            g["root"] = g["root"].replace("conv2", "downsample.0")
            renamed += 1
    assert renamed == 3
    replayed, _ = slimming.prune(model, 0.4, EXAMPLE, plan=old)
    assert layer_widths(replayed) == layer_widths(pruned)


def test_a_plan_that_splits_channels_which_must_go_together_is_refused():
    """A grouped convolution takes the same positions from each of its runs: a plan keeping position 3 in
    the first run and not in the second cannot be carried out."""
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)))
    _, plan = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, min_keep=0.0)
    first = next(g for g in plan["groups"] if g["root"] == "0")
    first["kept"], first["channels_after"] = [0, 1, 2, 4], 4
    plan["channels_after"] = sum(u["channels_after"] for u in plan["groups"] + plan["selections"])
    plan["pruned_fraction"] = 1 - plan["channels_after"] / plan["channels_before"]
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CompressError, match="^plan keeps only part of channels that must go together at 0$"):
        slimming.prune(model, 0.5, EXAMPLE, plan=plan)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
