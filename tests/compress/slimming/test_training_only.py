"""Layers that run only in training mode (auxiliary classifiers): pruning follows the eval forward, so they
kept their old widths, the self-check passed, and the first training step failed. Refused now, in one line."""

import copy

import pytest
import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.errors import CompressError
from compress.slimming.training_only import modules_run


class WithAux(nn.Module):
    """An auxiliary head (with its own BN and dropout) that runs only in training, as in GoogLeNet."""

    def __init__(self, aux=True):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.aux = nn.Sequential(nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)) if aux else None
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        x = self.stem(x)
        if self.training and self.aux is not None:
            return self.head(x), self.aux(x)
        return self.head(x)


def test_a_branch_run_only_in_training_is_refused_naming_it_and_the_model_is_left_as_it_was():
    model = randomize_bn(WithAux()).train()
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    with pytest.raises(CompressError, match=r"^WithAux runs aux only in training mode: pruning follows the eval "
                                            r"forward, .* turn them off before pruning") as info:
        slimming.prune(model, 0.5, torch.zeros(1, 3, 16, 16), min_keep=0.0)
    assert "\n" not in str(info.value)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN statistics too
    assert torch.equal(torch.get_rng_state(), rng)  # the dropout drew from a forked generator


def test_with_the_branch_turned_off_it_prunes_and_trains():
    model = randomize_bn(WithAux(aux=False))
    pruned, _ = slimming.prune(model, 0.5, torch.zeros(1, 3, 16, 16), min_keep=0.0)
    assert pruned.stem[0].out_channels < 16
    pruned.train()(torch.randn(2, 3, 16, 16)).sum().backward()


def test_a_training_forward_that_cannot_run_is_not_held_against_the_model():
    class WantsTargets(WithAux):
        def forward(self, x):
            if self.training:
                raise ValueError("targets should be passed in training mode")
            return super().forward(x)

    model = randomize_bn(WantsTargets())
    assert modules_run(model, [(torch.zeros(1, 3, 16, 16), True)]) == [{""}]
    slimming.prune(model, 0.5, torch.zeros(1, 3, 16, 16), min_keep=0.0)


def test_a_training_only_branch_that_fails_at_the_example_size_is_still_found():
    """Inception v3's auxiliary head cannot run at 75 px in training mode: the check returned nothing and
    the prune went through (then training at 299 px failed)."""

    class SmallAux(WithAux):
        def forward(self, x):
            x = self.stem(x)
            if self.training:
                self.aux(x)
                raise RuntimeError("input image is smaller than kernel size")
            return self.head(x)

    with pytest.raises(CompressError, match="^SmallAux runs aux only in training mode"):
        slimming.prune(randomize_bn(SmallAux()), 0.5, torch.zeros(1, 3, 16, 16), min_keep=0.0)


def test_a_buffer_the_training_forward_assigns_anew_is_put_back():
    class Reassigns(WithAux):
        def __init__(self):
            super().__init__(aux=False)
            self.register_buffer("seen", torch.zeros(2))

        def forward(self, x):
            if self.training:
                self.seen = self.seen + 1
            return super().forward(x)

    model = randomize_bn(Reassigns())
    before = model.seen
    modules_run(model, [(torch.zeros(1, 3, 16, 16), True)])
    assert model.seen is before and torch.equal(model.seen, torch.zeros(2))


class InitialisesOnFirstBatch(nn.Module):
    """A per-channel affine that sets itself from its first training batch (Glow's ActNorm)."""

    def __init__(self, channels):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), 0.5))
        self.initialized = False

    def forward(self, x):
        if self.training and not self.initialized:
            with torch.no_grad():
                self.scale.copy_(1 / (x.std((0, 2, 3), keepdim=True) + 1e-6))
            self.initialized = True
            self.batches_seen = 1
        return x * self.scale


def _with_actnorm():
    model = WithAux(aux=False)
    model.stem.insert(0, InitialisesOnFirstBatch(3))
    model = randomize_bn(model).eval()
    with torch.no_grad():  # four dead channels: pruning them changes nothing
        model.stem[2].weight[:4] = 0
        model.stem[2].bias[:4] = 0
    return model


def test_parameters_and_flags_a_training_forward_sets_are_put_back():
    model = _with_actnorm()
    norm, scale = model.stem[0], model.stem[0].scale
    modules_run(model, [(torch.randn(2, 3, 16, 16) * 3, True)])
    assert norm.scale is scale and torch.equal(scale, torch.full_like(scale, 0.5))
    assert norm.initialized is False and not hasattr(norm, "batches_seen")


@pytest.mark.parametrize("percent, options", [(3.5 / 16, {}), (None, {"target_macs": 0.01})], ids=["prunes", "refuses"])
def test_prune_leaves_a_layer_that_initialises_on_its_first_batch_as_it_was(percent, options):
    model = _with_actnorm()
    original, x = copy.deepcopy(model), torch.randn(2, 3, 16, 16) * 3 + 1
    try:
        slimming.prune(model, percent, x, min_keep=0.0, **options)
    except CompressError as exc:
        assert "cannot be met" in str(exc)
    assert torch.equal(model.stem[0].scale, original.stem[0].scale) and model.stem[0].initialized is False
    with torch.no_grad():
        t = torch.randn(3, 3, 16, 16)
        assert torch.allclose(model(t), original(t), rtol=0, atol=1e-5 * float(original(t).abs().max()))


def test_a_sparse_stage_aimed_at_a_prune_refuses_at_its_first_decision():
    """removal_preview (what targeted sparsity reads) did not refuse, so a whole sparse stage was trained
    for a prune that would refuse."""
    model = randomize_bn(WithAux()).train()
    with pytest.raises(CompressError, match="^WithAux runs aux only in training mode"):
        slimming.removal_preview(model, 0.5, torch.zeros(1, 3, 16, 16), min_keep=0.0, training_only_check=True)
    assert slimming.removal_preview(model, 0.5, torch.zeros(1, 3, 16, 16), min_keep=0.0)  # later decisions: no
    assert model.training


torchvision = pytest.importorskip("torchvision")


def test_torchvision_googlenet_with_its_auxiliary_classifiers():
    model = randomize_bn(torchvision.models.googlenet(weights=None, num_classes=10, aux_logits=True,
                                                      init_weights=True))
    with pytest.raises(CompressError, match=r"^GoogLeNet runs aux1, aux2 only in training mode"):
        slimming.prune(model, 0.3, torch.zeros(1, 3, 64, 64))
    model.aux_logits, model.aux1, model.aux2 = False, None, None
    pruned, plan = slimming.prune(model, 0.3, torch.zeros(1, 3, 64, 64))
    assert plan["pruned_fraction"] > 0.1
    pruned.train()(torch.randn(2, 3, 64, 64))
