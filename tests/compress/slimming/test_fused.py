"""BatchNorm subclasses that carry more than a BN (timm's BatchNormAct2d): pruned exactly, class and
activation kept, through group pruning, consumer-side selection, and the model.json widths."""

import copy

import pytest
import torch
from slimming_support import prune_exactly
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.channel_select import SelectBatchNorm2d, from_width_spec, selecting_class, width_spec
from compress.errors import CompressError
from compress.slimming.fused import supported_batchnorm

timm = pytest.importorskip("timm", reason="timm is optional; the dev extra installs it")
from timm.layers import BatchNormAct2d  # noqa: E402

EXAMPLE = torch.zeros(1, 3, 64, 64)


def _acts(model: nn.Module) -> dict[str, type]:
    return {n: type(m.act) for n, m in model.named_modules() if isinstance(m, BatchNormAct2d)}


@pytest.mark.parametrize("name", ["mobilenetv3_large_100", "mobilenetv4_conv_small"])
def test_timm_mobilenets_prune_exactly_and_keep_their_activations(name):
    """Today's consumer-side selection replaced BatchNormAct2d by a plain BN, dropping its ReLU/Hardswish:
    outputs changed by 7.5% and 240% although the only channels removed had γ = β = 0."""
    model = randomize_bn(timm.create_model(name, pretrained=False))
    acts = _acts(model)
    pruned, _, plan, rel = prune_exactly(model, EXAMPLE)
    assert plan["channels_after"] < plan["channels_before"]
    assert rel <= 1e-5
    assert _acts(pruned) == acts  # every fused BN is still a BatchNormAct2d with its own activation
    assert plan["check"]["max_relative_difference"] <= plan["check"]["tolerance"]


def _small_timm_densenet():
    from timm.models.densenet import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2), num_classes=10)


def test_a_fused_bn_pruned_by_selection_keeps_its_class_activation_and_width_record():
    """timm's DenseNet reads every concatenation through a BatchNormAct2d: a selection site."""
    model = randomize_bn(_small_timm_densenet(), seed=2)
    acts = _acts(model)
    pruned, _, plan, rel = prune_exactly(model, EXAMPLE, percent=0.4, min_keep=0.0)
    assert rel <= 1e-5
    assert any(s["channels_after"] < s["channels_before"] for s in plan["selections"])
    selecting = [m for m in pruned.modules() if isinstance(m, SelectBatchNorm2d)]
    assert selecting and all(isinstance(m, BatchNormAct2d) and isinstance(m.act, nn.ReLU) for m in selecting)
    assert _acts(pruned) == acts
    # model.json widths: the selecting class is rebuilt from the architecture's own BN, activation included
    name, bn = next((n, m) for n, m in pruned.named_modules() if isinstance(m, SelectBatchNorm2d))
    spec = width_spec(bn)
    assert spec["batchnorm"] == "BatchNormAct2d"
    rebuilt = from_width_spec(dict(_small_timm_densenet().named_modules())[name], spec)
    assert type(rebuilt) is type(bn) and isinstance(rebuilt.act, nn.ReLU)
    rebuilt.load_state_dict(bn.state_dict())
    x = torch.randn(2, bn.in_channels, 4, 4)
    assert torch.equal(rebuilt.eval()(x), bn.eval()(x))


def test_the_selecting_variant_is_one_class_per_bn_class_and_pickles():
    import pickle

    cls = selecting_class(BatchNormAct2d)
    assert cls is selecting_class(BatchNormAct2d) and issubclass(cls, BatchNormAct2d)
    assert selecting_class(nn.BatchNorm2d) is SelectBatchNorm2d
    model = randomize_bn(_small_timm_densenet())
    slimming.prune(model, 0.4, EXAMPLE, min_keep=0.0)
    assert any(type(m) is cls for m in model.modules())
    assert pickle.loads(pickle.dumps(model)) is not None


class ScaledBN(nn.BatchNorm2d):
    """A BN subclass with per-channel state of its own that pruning does not know how to shrink."""

    def __init__(self, n):
        super().__init__(n)
        self.extra = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return super().forward(x) * self.extra.view(1, -1, 1, 1)


def test_a_bn_subclass_with_unknown_state_is_left_alone_and_the_plan_says_why():
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), ScaledBN(8), nn.ReLU(),
                                       nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)))
    assert "extra" in supported_batchnorm(model[1])
    pruned, plan = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, min_keep=0.0)
    assert pruned[1].num_features == 8 and pruned[0].out_channels == 8
    assert any("extra" in s["reason"] for s in plan["skipped"])
    assert pruned[4].num_features < 8  # the plain BN's channels still go
    only_scaled = nn.Sequential(nn.Conv2d(3, 8, 3), ScaledBN(8), nn.Flatten(), nn.LazyLinear(4))
    only_scaled(EXAMPLE)
    with pytest.raises(CompressError, match=r"^Sequential has no BatchNorm channels to prune \(.*extra"):
        slimming.prune(randomize_bn(only_scaled), 0.5, EXAMPLE)


def test_a_pruned_timm_network_with_fused_selections_saves_and_loads(tmp_path):
    import compress

    model = randomize_bn(timm.create_model("densenet121", growth_rate=8, block_config=(2, 2), num_classes=10), seed=3)
    plan = compress.prune(model, EXAMPLE, percent=0.4, min_keep=0.0)
    assert any(s["channels_after"] < s["channels_before"] for s in plan.data["selections"])
    compress.save_model(model, tmp_path / "m", classes=[str(i) for i in range(10)], input_size=64,
                        mean=[0.5] * 3, std=[0.25] * 3)
    loaded, _ = compress.load_model(tmp_path / "m")
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
