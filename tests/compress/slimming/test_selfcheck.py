"""The self-check after every pruning: a broken or changed network is refused in one line naming the first
module where it diverges, and the caller's model is left exactly as it was."""

import copy

import pytest
import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.errors import CompressError
from compress.measure import layer_widths
from compress.models import create_model
from compress.slimming import surgery

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _vgg():
    return randomize_bn(create_model("vgg11", width=0.125), seed=4)


def _unchanged(model, widths, state, modules):
    assert layer_widths(model) == widths
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    assert [type(m) for m in model.modules()] == modules


def test_a_refused_prune_leaves_the_callers_parameter_objects_and_mode():
    """The refused prune put copies back: equal values, but new parameter objects, so an optimizer built
    on the model no longer trained it; and the model was left in eval mode."""
    model = _vgg().train()
    first = next(model.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CompressError, match="cannot be met"):
        slimming.prune(model, None, EXAMPLE, target_macs=1e-6)
    assert next(model.parameters()) is first and model.training
    assert all(any(p is q for q in optimizer.param_groups[0]["params"]) for p in model.parameters())


def test_every_plan_records_its_check():
    _, plan = slimming.prune(_vgg(), 0.5, EXAMPLE)
    assert 0 < plan["removed_gamma_max"] <= plan["threshold"]  # what a stage reads to call a pruning exact
    check = plan["check"]
    assert check["max_relative_difference"] <= check["tolerance"] == 1e-4
    assert check["forwards"] == 2 and check["seconds"] >= 0 and check["approximation"] is not None


def test_a_network_that_computes_something_else_is_refused_naming_the_first_diverging_module(monkeypatch):
    real = surgery._cut_batchnorm

    def wrong_channels(m, gone):  # keeps as many channels as it should, but the first ones
        real(m, list(range(m.num_features - len(gone), m.num_features)) if gone else gone)

    monkeypatch.setattr(surgery, "_cut_batchnorm", wrong_channels)
    model = _vgg()
    widths, state, modules = layer_widths(model), copy.deepcopy(model.state_dict()), [type(m) for m in model.modules()]
    objects = [*model.modules(), *model.parameters(), *model.buffers()]
    with pytest.raises(CompressError, match=r"^pruning would change VGG's output beyond the self-check tolerance "
                                            r"\(max relative difference .* > 0\.0001\); outputs first diverge at "
                                            r"features\.\d+ \(BatchNorm2d\); the model is left unchanged$") as info:
        slimming.prune(model, 0.5, EXAMPLE)
    assert "\n" not in str(info.value)
    _unchanged(model, widths, state, modules)
    # The caller's own objects, not copies of them: after the surgery had replaced them.
    assert all(a is b for a, b in zip([*model.modules(), *model.parameters(), *model.buffers()], objects))


class MaskedClassifier(nn.Module):
    """Logits plus a fixed mask: class 0 is disabled with -inf (or NaN)."""

    def __init__(self, fill):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
        self.register_buffer("mask", torch.tensor([fill] + [0.0] * 9))

    def forward(self, x):
        return self.f(x) + self.mask


@pytest.mark.parametrize("fill", [float("-inf"), float("nan")])
def test_a_non_finite_output_does_not_switch_the_check_off(monkeypatch, fill):
    """One -inf or NaN made the output's scale infinite (or NaN), and every difference passed: the wrong
    channels were accepted. The finite values are compared; the others must match the reference's."""
    model = randomize_bn(MaskedClassifier(fill), seed=4)
    original = copy.deepcopy(model)
    pruned, plan = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE)  # a faithful prune passes
    assert plan["check"]["max_relative_difference"] <= 1e-4
    real = surgery._cut_batchnorm
    monkeypatch.setattr(surgery, "_cut_batchnorm", lambda m, gone: real(
        m, list(range(m.num_features - len(gone), m.num_features)) if gone else gone))
    with pytest.raises(CompressError, match="self-check"):
        slimming.prune(model, 0.5, EXAMPLE)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)[:, 1:], original(x)[:, 1:])


def test_outputs_the_check_cannot_compare_are_refused_before_pruning():
    """A dataclass of logits was neither traced as the output nor compared: the logits lost half their
    classes and the prune was accepted with a difference of 0."""
    import dataclasses

    @dataclasses.dataclass
    class Out:
        logits: torch.Tensor

    class ReturnsAnObject(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))

        def forward(self, x):
            return Out(self.f(x).mean((2, 3)))

    model = randomize_bn(ReturnsAnObject())
    widths = layer_widths(model)
    with pytest.raises(CompressError, match="^the model's outputs hold an object of type Out; pruning checks"):
        slimming.prune(model, 0.5, torch.zeros(1, 3, 16, 16), min_keep=0.0)
    assert layer_widths(model) == widths


def test_a_network_whose_forward_fails_is_refused_naming_where(monkeypatch):
    monkeypatch.setattr(surgery, "_cut_batchnorm", lambda m, gone: None)  # BNs keep their old width
    model = _vgg()
    widths, state, modules = layer_widths(model), copy.deepcopy(model.state_dict()), [type(m) for m in model.modules()]
    with pytest.raises(CompressError, match=r"^the pruned VGG fails in features\.\d+ \(BatchNorm2d\) \(RuntimeError: "):
        slimming.prune(model, 0.5, EXAMPLE)
    _unchanged(model, widths, state, modules)


def test_an_unexpected_error_inside_pruning_is_one_line_and_restores_the_model(monkeypatch):
    def boom(*_a, **_k):
        raise IndexError("list index out of range")

    monkeypatch.setattr(surgery, "_cut_conv", boom)
    model = _vgg()
    widths, state, modules = layer_widths(model), copy.deepcopy(model.state_dict()), [type(m) for m in model.modules()]
    with pytest.raises(CompressError, match=r"^pruning VGG failed \(IndexError: list index out of range\); "
                                            r"the model is left unchanged$"):
        slimming.prune(model, 0.5, EXAMPLE)
    _unchanged(model, widths, state, modules)


class CatPlusAdd(nn.Module):
    """Two convolutions concatenated, then added to a third: one group in which a layer could lose all."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.c = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1) + self.c(x))


def test_no_layer_is_ever_left_with_zero_channels():
    model = randomize_bn(CatPlusAdd())
    with torch.no_grad():
        model.a[1].weight.fill_(1e-3)
        model.c[1].weight[:4] = 1e-3  # every channel made by `a` is the least important of the network
    pruned, plan = slimming.prune(model, 0.5, EXAMPLE, min_keep=0.0)
    assert pruned.a[0].out_channels >= 1 and pruned.a[1].num_features >= 1
    assert plan["check"]["max_relative_difference"] <= 1e-4


def test_the_engine_refuses_an_empty_layer_itself():
    model = nn.Sequential(nn.Conv2d(3, 1, 1))
    model[0].out_channels = 0
    with pytest.raises(CompressError, match=r"^pruning would leave 0 \(Conv2d\) with no channels$"):
        surgery.check_no_empty_layer(model)


timm = pytest.importorskip("timm", reason="timm is optional; the dev extra installs it")


def test_ghostnet_never_leaves_an_empty_convolution():
    """Pruning ghostnet_100 used to return normally with convolutions of 0 output channels."""
    model = randomize_bn(timm.create_model("ghostnet_100", pretrained=False))
    pruned, plan = slimming.prune(model, 0.7, torch.zeros(1, 3, 64, 64), min_keep=0.0)
    assert plan["pruned_fraction"] > 0.2
    assert min(min(m.in_channels, m.out_channels) for m in pruned.modules() if isinstance(m, nn.Conv2d)) >= 1
    assert plan["check"]["max_relative_difference"] <= plan["check"]["tolerance"]
    with torch.no_grad():
        assert pruned(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


class CountKeptInCode(nn.Module):
    """Uses a channel count it stored at construction: nothing in the forward shows it to the trace."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.c = 8
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.b(self.a(x))
        return self.head(x.reshape(x.shape[0], self.c, -1).mean(-1))


def test_channels_that_break_the_network_are_left_alone_and_the_rest_prunes():
    """The first attempt breaks at the reshape; the channels read there stay, the others go."""
    model = randomize_bn(CountKeptInCode())
    pruned, plan = slimming.prune(model, 0.5, EXAMPLE, min_keep=0.0)
    assert pruned.b[0].out_channels == 8 and pruned.a[0].out_channels < 8
    assert plan["skipped"] == [{"layers": ["b.0"], "channels": 8,
                                "reason": "pruning them changed the network at head (self-check)"}]
    assert plan["check"]["max_relative_difference"] <= 1e-4


def test_a_plan_that_left_units_alone_replays():
    """The units left alone after a retry are recorded in `skipped` only: replaying the plan refused them
    ('plan has no entry for layer b.0'); now they keep their channels and the widths come out the same."""
    model = randomize_bn(CountKeptInCode())
    fresh = copy.deepcopy(model)
    pruned, plan = slimming.prune(model, 0.5, EXAMPLE, min_keep=0.0)
    replayed, _ = slimming.prune(fresh, 0.5, EXAMPLE, plan=plan)
    assert layer_widths(replayed) == layer_widths(pruned)


class TwoHeads(nn.Module):
    """Two heads on one stem, returned apart; head `a` comes first and folds a constant at `a.3`."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 1))
        self.b = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(), nn.Conv2d(24, 3, 1))

    def forward(self, x):
        x = self.stem(x)
        return self.a(x), self.b(x)


def test_the_module_named_is_where_the_wrong_channels_are_not_a_right_consumer_before_them(monkeypatch):
    """The diagnosis recorded each consumer's output before its folded constant was added, so `a.3` (right,
    but the first consumer with a constant) was named for the wrong channels cut in `b.1`; the engine then
    left head `a` alone, retried, and refused naming the wrong module."""
    model = randomize_bn(TwoHeads(), seed=3)
    _, plan = slimming.prune(copy.deepcopy(model), 0.4, EXAMPLE, min_keep=0.0)  # a faithful prune passes
    assert not plan["skipped"] and plan["check"]["max_relative_difference"] <= 1e-4
    real = surgery._cut_batchnorm
    monkeypatch.setattr(surgery, "_cut_batchnorm", lambda m, gone: real(
        m, list(range(m.num_features - len(gone), m.num_features)) if gone and m.num_features == 24 else gone))
    _, plan = slimming.prune(model, 0.4, EXAMPLE, min_keep=0.0)
    assert [s["layers"] for s in plan["skipped"]] == [["b.0"]]
    assert plan["skipped"][0]["reason"] == "pruning them changed the network at b.1 (self-check)"


class _StackedHeads(nn.Module):
    """Two or four heads stacked in front of the batch: the output's first dimension is the head, and with
    two heads on a probe of one image it equals twice the batch."""

    def __init__(self, heads: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(16, 4) for _ in range(heads))

    def forward(self, x):
        y = self.features(x).mean((2, 3))
        return torch.stack([h(y) for h in self.heads], 0)


@pytest.mark.parametrize("heads", [2, 4])
def test_outputs_stacked_in_front_of_the_batch_are_checked_not_refused(heads):
    """torch.stack([a, b], 0) was refused as "a different output structure": its first dimension, 2, was
    taken for the doubled batch of a one-image probe and split there."""
    model = randomize_bn(_StackedHeads(heads), seed=1).eval()
    reference = copy.deepcopy(model)
    x = torch.randn(3, 3, 32, 32)
    _, plan = slimming.prune(model, 0.5, EXAMPLE)
    assert plan["check"]["max_relative_difference"] <= plan["check"]["tolerance"]
    assert layer_widths(model) != layer_widths(reference)
    with torch.no_grad():
        assert model(x).shape == reference(x).shape == (heads, 3, 4)
