"""Layers that run only for other inputs than the traced example are refused before anything changes."""

import copy

import pytest
import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.errors import CompressError
from compress.slimming.other_inputs import probe_inputs, untraced_runs


def _cbr(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())


class BrightHead(nn.Module):
    """Bright images take another head, which reads the first 8 stem channels."""

    def __init__(self):
        super().__init__()
        self.stem, self.body, self.fc = _cbr(3, 16), _cbr(16, 16), nn.Linear(16, 10)
        self.alt, self.fc_alt = _cbr(8, 8), nn.Linear(8, 10)

    def forward(self, x):
        f = self.stem(x)
        if x.mean() > 1.0:
            return self.fc_alt(self.alt(f[:, :8]).mean((2, 3)))
        return self.fc(self.body(f).mean((2, 3)))


class LargeInputsDownsample(nn.Module):
    """A block that runs only from 64 pixels up."""

    def __init__(self):
        super().__init__()
        self.stem, self.down, self.fc = _cbr(3, 16), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.Linear(16, 10)

    def forward(self, x):
        f = self.stem(x)
        if x.shape[-1] >= 64:
            f = self.down(f)
        return self.fc(f.mean((2, 3)))


class FixedSize(nn.Module):
    """A classifier that takes 32x32 images only: the larger probe fails, which says nothing against it."""

    def __init__(self):
        super().__init__()
        self.stem, self.fc = _cbr(3, 16), nn.Linear(16 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(self.stem(x).flatten(1))


@pytest.mark.parametrize("model, shown", [(BrightHead, "runs alt, fc_alt for brighter images (+3)"),
                                          (LargeInputsDownsample, "runs down for a 64x64 input")])
def test_a_layer_run_only_for_other_inputs_is_refused_and_the_model_left_as_it_was(model, shown):
    model = randomize_bn(model())
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CompressError, match="but not for the example input") as info:
        slimming.prune(model, 0.3, torch.zeros(1, 3, 32, 32))
    assert shown in str(info.value) and "\n" not in str(info.value)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_network_that_takes_one_size_only_still_prunes():
    model = randomize_bn(FixedSize())
    pruned, _ = slimming.prune(model, 0.3, torch.zeros(1, 3, 32, 32))
    assert pruned.stem[0].out_channels < 16


def test_the_probes_are_single_images_brighter_darker_and_larger():
    probes = dict(probe_inputs(torch.zeros(4, 3, 224, 224)))
    assert list(probes) == ["brighter images (+3)", "darker images (-3)", "a 352x352 input"]  # 336 up to 32s
    assert probes["brighter images (+3)"].mean() > 2 and probes["darker images (-3)"].mean() < -2
    assert dict(probe_inputs(torch.zeros(1, 3, 33, 20)))  # sizes that are not multiples of 32: 1.5x, rounded up
    assert list(dict(probe_inputs(torch.zeros(1, 3, 33, 20))))[2] == "a 50x30 input"
    assert probe_inputs(torch.zeros(1, 5, dtype=torch.long)) == []
    huge = probe_inputs(torch.zeros(1, 3, 4096, 4096))  # a larger image would cost more than pruning itself
    assert [label for label, _ in huge] == ["brighter images (+3)", "darker images (-3)"]


def test_the_probes_leave_the_model_as_it_was():
    model = randomize_bn(BrightHead())
    before = copy.deepcopy(model.state_dict())
    _, runs = untraced_runs(model, torch.zeros(1, 3, 32, 32))
    assert "alt" in runs["brighter images (+3)"] and "alt" not in runs["darker images (-3)"]
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
