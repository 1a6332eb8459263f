"""What pruning refuses rather than return another network than asked: a lazy layer with no shape yet, a floor
that keeps every channel, scores that tie at a nonzero threshold (compress.slimming.refusals)."""

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


@pytest.mark.parametrize("floor", [dict(min_channels=1000), dict(min_keep=1.0), dict(min_channels=100, round_to=64)])
def test_a_floor_that_keeps_every_channel_is_refused_and_the_model_left_as_it_was(floor):
    """min_channels=1000 returned the network unpruned, with a plan, as the answer to percent 0.5."""
    model = randomize_bn(create_model("vgg11", width=0.25))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CompressError, match=r"keeps every channel of every layer: percent 0.5 would prune nothing"):
        slimming.prune(model, 0.5, EXAMPLE, **floor)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and before.keys() == model.state_dict().keys()
    slimming.prune(model, 0.5, EXAMPLE, min_channels=100)  # a floor some layers exceed still prunes the rest
    assert layer_widths(model) != layer_widths(randomize_bn(create_model("vgg11", width=0.25)))


@pytest.mark.parametrize("request_", [dict(percent=0.05), dict(percent=None, target_macs=0.5),
                                      dict(percent=None, target_params=0.5)])
def test_gammas_that_tie_at_the_threshold_are_refused_not_all_removed(request_):
    """γ as initialized (all 0.5 here, 1 in torchvision) tie: percent 0.05 removed 80% of the channels and target_macs 0.5 kept
    0.067 of the MACs, each returned as a success."""
    model = create_model("vgg11", width=0.25).eval()
    before = layer_widths(model)
    percent = request_.pop("percent")
    with pytest.raises(CompressError, match=r"channels share the score 0.5 at the threshold, so .* would (remove|keep) "
                                            r".*their BN γ do not rank them"):
        slimming.prune(model, percent, EXAMPLE, **request_)
    assert layer_widths(model) == before
    assert slimming.removal_preview(model, percent, EXAMPLE, **request_)  # a sparse stage's first look


def test_gammas_held_at_zero_may_all_go_past_the_percent():
    """Channels a sparse stage held at exactly zero compute nothing: all of them go, even past the percent."""
    model = randomize_bn(create_model("vgg11", width=0.25))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight[: bn.num_features // 2] = 0
    _, plan = slimming.prune(model, 0.1, EXAMPLE)
    assert plan["pruned_fraction"] > 0.4


def test_a_percent_whose_threshold_falls_among_unremovable_channels_is_refused_not_a_no_op():
    """A residual branch's last BN initialized at zero (torchvision's zero_init_residual, timm's default): 40% of
    all γ are 0 and every removable one is 1, so percent 0.3 pruned nothing and returned success."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=3, zero_init_residual=True).eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CompressError, match=r"percent 0.3 would prune nothing: no removable channel scores under "
                                            r"its threshold 0 \(the 30% point of every BN's \|γ\|"):
        slimming.prune(model, 0.3, EXAMPLE)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert slimming.removal_preview(model, 0.3, EXAMPLE) is not None  # a sparse stage's first look still runs


def test_a_lazy_layer_not_yet_initialized_is_refused_in_one_line():
    """Saving the parameters before the training-mode forward raised a bare ValueError on one."""
    model = nn.Sequential(nn.LazyConv2d(8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    for call in (lambda: slimming.prune(model, 0.5, EXAMPLE), lambda: slimming.least_budget(model, EXAMPLE),
                 lambda: slimming.removal_preview(model, 0.5, EXAMPLE)):
        with pytest.raises(CompressError, match=r"^Sequential has lazy layers not initialized yet \(0\): run one "
                                                r"forward pass on an example first$"):
            call()
    model(EXAMPLE)  # initialized (and its γ spread out, as training leaves them): it prunes
    slimming.prune(randomize_bn(model).eval(), 0.5, EXAMPLE)
    assert model[0].out_channels < 8


def _wrapped_first_conv(wrap):
    torch.manual_seed(0)
    model = nn.Sequential(wrap(nn.Conv2d(3, 8, 3)), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 2)).eval()
    return randomize_bn(model)


@pytest.mark.parametrize("wrap", [nn.utils.parametrizations.weight_norm, nn.utils.parametrizations.spectral_norm])
def test_a_parametrized_layer_that_pruning_cuts_is_named_with_the_way_out(wrap):
    """weight_norm's parametrization failed as "pruning Sequential failed (KeyError: "attribute 'weight' already
    exists")", which named neither the layer nor the way out."""
    model = _wrapped_first_conv(wrap)
    before = model(EXAMPLE)
    with pytest.raises(CompressError, match=r"the model is left unchanged; 0 compute their weight from other tensors "
                                            r"\(weight_norm, spectral_norm or another parametrization\), which pruning "
                                            r"cannot cut: remove it first \(torch.nn.utils.parametrize."
                                            r"remove_parametrizations\(layer, 'weight'\)\)"):
        slimming.prune(model, 0.5, EXAMPLE)
    torch.testing.assert_close(model(EXAMPLE), before, rtol=0, atol=0)
    assert model[1].num_features == 8


def test_a_parametrized_layer_that_keeps_its_width_prunes_as_any_other():
    """The review found a first version of the refusal above refusing every parametrized model, and this one
    had pruned exactly before it."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.utils.parametrizations.orthogonal(nn.Linear(8, 8)), nn.Linear(8, 2)).eval()
    _, plan = slimming.prune(randomize_bn(model), 0.5, EXAMPLE)
    assert model[1].num_features < 8 and plan["check"]["max_relative_difference"] <= plan["check"]["tolerance"]


def test_the_hooked_weight_norm_is_refused_up_front_with_the_way_out():
    """Its older, hook-based form cannot be copied: a bare RuntimeError from deepcopy escaped."""
    model = _wrapped_first_conv(nn.utils.weight_norm)
    for call in (lambda: slimming.prune(model, 0.5, EXAMPLE), lambda: slimming.least_budget(model, EXAMPLE),
                 lambda: slimming.removal_preview(model, 0.5, EXAMPLE)):
        with pytest.raises(CompressError, match=r"^Sequential has layers whose weight a hook computes from other "
                                                r"tensors \(torch.nn.utils.weight_norm or spectral_norm: 0\).*"
                                                r"torch.nn.utils.remove_weight_norm\(layer\)"):
            call()
    assert model[1].num_features == 8


def test_an_example_without_its_batch_dimension_is_named():
    model = create_model("vgg11", width=0.125)
    with pytest.raises(CompressError, match=r"\(example_input is a batch, its first dimension the batch: for one "
                                            r"image of \(3, 32, 32\), give example_input.unsqueeze\(0\)\)$"):
        slimming.prune(randomize_bn(model).eval(), 0.5, torch.zeros(3, 32, 32))


class SqueezedHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)).squeeze())  # drops the batch at one image


def test_a_head_that_drops_the_batch_of_one_image_is_named():
    """Refused as "pruning SqueezedHead failed (IndexError: too many indices for tensor of dimension 1)"."""
    model = randomize_bn(SqueezedHead()).eval()
    with pytest.raises(CompressError, match=r"^fc receives a tensor of shape \[8\], with no batch dimension, when "
                                            r"the model runs on one image \(a squeeze\(\) that drops the batch\?\)"):
        slimming.prune(model, 0.3, EXAMPLE)
    assert model.bn.num_features == 8
