import pytest
import torch
import torch.nn as nn

from compress.models import create_model
from compress.models.preresnet import Bottleneck, check_depth


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def test_preresnet164_parameter_count():
    model = create_model("preresnet164")
    # 1,703,258 = the paper's "1.70M" for PreResNet-164 on CIFAR-10
    assert count_params(model) == 1_703_258
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 54
    assert model.fc.in_features == 256


def test_preresnet_block_layout():
    model = create_model("preresnet20")
    first = model.layer1[0]
    assert (first.conv1.in_channels, first.conv1.out_channels) == (16, 16)
    assert first.conv3.out_channels == 64
    assert first.downsample is not None and first.downsample.stride == (1, 1)
    assert model.layer1[1].downsample is None
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].downsample.stride == (2, 2)
    assert model.layer3[-1].conv3.out_channels == 256


@pytest.mark.parametrize("depth,n", [(11, 1), (20, 2), (164, 18)])
def test_depth_rule(depth, n):
    assert check_depth(depth) == n


@pytest.mark.parametrize("depth", [21, 2, 10, 165])
def test_depth_must_be_9n_plus_2(depth):
    with pytest.raises(ValueError, match="9n\\+2"):
        create_model(f"preresnet{depth}")


def test_forward_width_and_classes():
    model = create_model("preresnet20", num_classes=100, width=0.25)
    assert model.fc.in_features == 64
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_forward_survives_physically_narrowed_block():
    model = create_model("preresnet20", width=0.5)
    block = model.layer2[1]
    block.conv1 = nn.Conv2d(block.conv1.in_channels, 3, 1, bias=False)
    block.bn2 = nn.BatchNorm2d(3)
    block.conv2 = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    block.bn3 = nn.BatchNorm2d(5)
    block.conv3 = nn.Conv2d(5, block.conv3.out_channels, 1, bias=False)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", ["preresnet900002", "preresnet1010"])
def test_depth_beyond_the_bound_is_refused_before_anything_is_built(name, monkeypatch):
    import compress.models.preresnet as pr

    monkeypatch.setattr(pr.PreResNet, "__init__", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(ValueError, match=r"depth \d+ is beyond the bound of 1001"):
        create_model(name)
    assert check_depth(1001) == 111
