"""Widths of layers that subclass Conv2d / BatchNorm2d / Linear (timm's BatchNormAct2d and Conv2dSame): they
keep their class, their activation and their padding rule through pruning, save and load."""

import json
import sys
import textwrap

import pytest
import torch
from torch import nn

import compress
from compress.errors import CompressError
from compress.measure import layer_widths
from compress.widths import apply_widths

timm = pytest.importorskip("timm", reason="timm is an optional dependency (the dev extra installs it)")

SOURCE = textwrap.dedent("""
    import torch.nn as nn
    from timm.layers import BatchNormAct2d, Conv2dSame


    class ActNet(nn.Module):
        def __init__(self, num_classes=4):
            super().__init__()
            self.conv1 = Conv2dSame(3, 16, 3, stride=2, bias=False)
            self.bn1 = BatchNormAct2d(16, act_layer="hard_swish")
            self.conv2 = nn.Conv2d(16, 24, 3, padding=1, bias=False)
            self.bn2 = BatchNormAct2d(24, act_layer="relu")
            self.fc = nn.Linear(24, num_classes)

        def forward(self, x):
            return self.fc(self.bn2(self.conv2(self.bn1(self.conv1(x)))).mean((2, 3)))
""")
KW = {"classes": list("abcd"), "input_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture()
def actnets(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "actnets.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield __import__("actnets")
    sys.modules.pop("actnets", None)


def lively(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand_like(m.weight) + 0.05
            m.bias.data = torch.randn_like(m.bias)
            m.running_mean.data = torch.randn_like(m.running_mean) * 0.1
    return model.eval()


def test_pruned_bn_subclasses_keep_class_and_outputs_through_save_and_load(tmp_path, actnets):
    model = lively(actnets.ActNet())
    plan = compress.prune(model, torch.zeros(1, 3, 32, 32), percent=0.4)
    assert plan.channels_after < plan.channels_before
    widths = layer_widths(model)
    assert widths["bn1"]["type"] == "BatchNorm2d" and widths["bn1"]["class"] == "timm.layers.norm_act.BatchNormAct2d"
    assert widths["conv1"]["class"].endswith("Conv2dSame") and "class" not in widths["conv2"]
    compress.save_model(model, tmp_path / "m", **KW)
    loaded, meta = compress.load_model(tmp_path / "m", trust="actnets")
    assert type(loaded.bn1).__name__ == "BatchNormAct2d" and isinstance(loaded.bn1.act, nn.Hardswish)
    assert type(loaded.conv1).__name__ == "Conv2dSame"
    assert loaded.bn1.num_features == model.bn1.num_features < 16
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_layer_of_another_class_is_refused(tmp_path, actnets):
    model = lively(actnets.ActNet())
    compress.save_model(model, tmp_path / "m", **KW)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["widths"]["bn1"]["class"] = "torch.nn.modules.batchnorm.BatchNorm2d"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CompressError, match="bn1.*BatchNormAct2d"):
        compress.load_model(tmp_path / "m", trust="actnets")


def test_a_selection_cannot_replace_a_bn_subclass(actnets):
    model = actnets.ActNet()
    spec = {"type": "SelectBatchNorm2d", "num_features": 8, "in_channels": 24, "selected": list(range(8))}
    with pytest.raises(CompressError, match="BatchNormAct2d"):
        apply_widths(model, {"bn2": spec})


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "efficientnet_b0"])
def test_timm_networks_with_batchnormact_save_and_load(tmp_path, name):
    model = lively(timm.create_model(name, num_classes=4))
    meta = compress.save_model(model, tmp_path / "m", **KW)
    assert meta["arch"] == "timm:create_model" and meta["arch_kwargs"]["model_name"] == name
    loaded, _ = compress.load_model(tmp_path / "m")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_layer_that_rebuilds_as_another_class_is_named_with_the_class_it_became():
    """torchvision's feature backbones rebuild with FrozenBatchNorm2d by default: the layer is there, as
    another class, and the message once said the network did not have it."""
    from torchvision.ops import FrozenBatchNorm2d

    saved = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    rebuilt = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4))
    with pytest.raises(CompressError, match=r"^widths name a layer '1' \(BatchNorm2d\) that Sequential builds as a "
                                            r"FrozenBatchNorm2d, not a BatchNorm2d$"):
        apply_widths(rebuilt, layer_widths(saved))
    with pytest.raises(CompressError, match=r"that Sequential does not have$"):
        apply_widths(nn.Sequential(nn.Conv2d(3, 4, 3)), layer_widths(saved))


def test_a_batchnorm1d_that_slimming_narrowed_is_recorded_and_rebuilt():
    """prune narrowed a BatchNorm1d after a Linear, which model.json did not record: save_model then refused
    the model, blaming its constructor arguments."""
    from compress.widths import layer_spec

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))

    model = build()
    with torch.no_grad():
        model[1].weight.uniform_(0.05, 1)
        model[6].weight.uniform_(0.05, 1)
    compress.prune(model.eval(), torch.zeros(1, 3, 16, 16), percent=0.3)
    assert layer_spec(model[6]) == {"type": "BatchNorm1d", "num_features": model[6].num_features} and \
        model[6].num_features < 16
    fresh = build()
    apply_widths(fresh, {name: spec for name, m in model.named_modules() if (spec := layer_spec(m))})
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(fresh.eval()(x), model(x))


@pytest.mark.parametrize("kind", ["conv1d", "conv3d"])
def test_a_pruned_conv1d_conv3d_or_batchnorm3d_is_recorded_and_rebuilt(kind):
    """prune cut a Conv1d reading pruned channels (and a BatchNorm3d's own channels), which model.json did not
    record: save_model then refused the model, blaming constructor arguments that could not fix it."""
    from compress.validate import _validate_widths
    from compress.widths import layer_spec

    def build():
        torch.manual_seed(0)
        stem = [nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
        if kind == "conv1d":  # the channels become a sequence's features
            return nn.Sequential(*stem, nn.Flatten(2), nn.Conv1d(16, 8, 3, padding=1), nn.AdaptiveAvgPool1d(1),
                                 nn.Flatten(), nn.Linear(8, 4))
        return nn.Sequential(*stem, nn.Unflatten(1, (1, 16)), nn.Conv3d(1, 6, 3, padding=1), nn.BatchNorm3d(6),
                             nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(6, 4))

    model = build()
    for bn in (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)):
        with torch.no_grad():
            bn.weight.uniform_(0.05, 1)
    compress.prune(model.eval(), torch.zeros(1, 3, 8, 8), percent=0.3)
    widths = {name: spec for name, m in model.named_modules() if (spec := layer_spec(m))}
    assert (model[4].in_channels < 16) if kind == "conv1d" else (model[4].out_channels < 6 and
                                                                 model[5].num_features < 6)
    assert widths["4"]["type"] == ("Conv1d" if kind == "conv1d" else "Conv3d")
    _validate_widths(json.loads(json.dumps(widths)), "model.json")
    fresh = build()
    apply_widths(fresh, widths)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(fresh.eval()(x), model(x))
