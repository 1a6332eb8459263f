"""Which groups slimming may prune: gated by their BNs, shown by structure at no cost, or by one forward
for the few that need it (squeeze-and-excitation); a group whose channels bypass their BNs stays."""

import pytest
import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.models import create_model


def _count_forwards(model):
    calls = []
    model.register_forward_pre_hook(lambda _m, _a: calls.append(1))
    return calls


def test_pruning_costs_twelve_forwards_however_many_groups():
    """One forward per group was the check's cost before (10 to 14 minutes for YOLOv8n on two cores):
    one in training mode (layers that run only there: compress.slimming.training_only), three on other
    single images (layers that run only for other inputs: compress.slimming.other_inputs), a trace,
    compensation, the two of the self-check, the two of its approximation on a larger image, and the two of
    its float64 look (on copies, which keep the model's hooks, since a hook may be part of what the model
    computes) remain."""
    model = randomize_bn(create_model("resnet18"))
    calls = _count_forwards(model)
    _, plan = slimming.prune(model, 0.4, torch.zeros(1, 3, 32, 32))
    assert len(plan["groups"]) >= 10
    assert len(calls) == 12


class Bypass(nn.Module):
    """`skip` adds a convolution's output without a BN: with γ = 0 those channels still vary."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.main = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.skip = nn.Conv2d(8, 8, 1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.main(x) + self.skip(x))


def test_a_group_whose_channels_bypass_their_bns_is_left_alone_with_the_reason():
    """Neither its structure nor what its consumers read shows it gated: one forward, γ zeroed, says no."""
    model = randomize_bn(Bypass())
    calls = _count_forwards(model)
    pruned, plan = slimming.prune(model, 0.5, torch.zeros(1, 3, 16, 16), min_keep=0.0)
    assert pruned.main[0].out_channels == pruned.skip.out_channels == 8
    assert any("not gated by their BatchNorms" in s["reason"] for s in plan["skipped"])
    assert pruned.stem[0].out_channels < 8  # the gated groups still prune
    assert len(calls) == 13  # one more than test_pruning_costs_twelve_forwards_however_many_groups


timm = pytest.importorskip("timm", reason="timm is optional; the dev extra installs it")


def test_squeeze_excitation_groups_are_shown_gated_without_a_forward():
    """An SE gate is computed from the group's own channels: silenced, it is a constant too."""
    model = randomize_bn(timm.create_model("mobilenetv3_small_050", pretrained=False))
    calls = _count_forwards(model)
    _, plan = slimming.prune(model, 0.3, torch.zeros(1, 3, 64, 64))
    se_roots = {n.rsplit(".se", 1)[0] for n, m in model.named_modules() if type(m).__name__ == "SqueezeExcite"}
    assert se_roots and any(g["root"].rsplit(".", 1)[0] in se_roots for g in plan["groups"])
    assert len(calls) == 12


def test_the_approximation_is_measured_at_a_larger_input_too():
    """Constants under an SE gate are fitted at the example's size: at 64 pixels the record said 2e-6,
    while at 96 the pruned network differed from the unpruned one (removed γ = 0) by 6e-4, unrecorded."""
    import copy

    from compress.slimming.other_inputs import larger_input
    from compress.slimming.reference import flatten_outputs, relative_difference

    torch.manual_seed(0)  # timm draws its initial weights from the global generator
    model = randomize_bn(timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=10)).eval()
    example = torch.zeros(1, 3, 64, 64)
    modules = dict(model.named_modules())
    with torch.no_grad():  # γ at zero on the channels the prune removes, β kept: what a sparse stage leaves
        for bn, idx in slimming.removal_preview(model, 0.3, example).items():
            modules[bn].weight[torch.tensor(sorted(idx))] = 0
    silenced = copy.deepcopy(model)
    _, plan = slimming.prune(model, 0.3, example)
    by_input = plan["check"]["approximation_by_input"]
    [(label, larger)] = larger_input(example)
    assert label == "a 96x96 input" and set(by_input) == {"example size", label}
    with torch.no_grad():
        measured = relative_difference(flatten_outputs(model(larger)), flatten_outputs(silenced(larger)))
    assert by_input[label] == pytest.approx(measured, rel=1e-2)
    assert by_input[label] > 100 * by_input["example size"] and plan["check"]["approximation"] == by_input[label]
