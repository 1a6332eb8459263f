import pytest
import torch
import torch.nn as nn

from compress.models import create_model
from compress.models.vgg import CFGS, VGG


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def count_macs(model, size=32):
    """Conv: Cout*Cin/groups*kh*kw*Hout*Wout; Linear: in*out."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += (module.out_channels * module.in_channels // module.groups
                      * kh * kw * output.shape[2] * output.shape[3])
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def test_vgg19_matches_paper_size():
    model = create_model("vgg19")
    assert count_params(model) == 20_035_018
    assert count_macs(model) == 398_136_320


def test_vgg_structure_names_and_head():
    model = create_model("vgg19")
    assert isinstance(model.features, nn.Sequential)
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.in_features == 512
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16
    assert all(c.bias is None and c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 4


@pytest.mark.parametrize("depth", sorted(CFGS))
def test_vgg_depths_forward(depth):
    model = create_model(f"vgg{depth}", num_classes=100, width=0.25)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) + 3 == depth
    assert convs[0].out_channels == 16 and convs[-1].out_channels == 128


def test_width_rounds_and_never_reaches_zero():
    model = VGG(cfg=[8, "M", 3], width=0.1)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [1, 1]
    assert model(torch.randn(1, 3, 4, 4)).shape == (1, 10)


def test_custom_cfg_from_pruned_widths():
    cfg = [13, "M", 7, "M", 5, "M", 9, "M", 4]
    model = VGG(cfg=cfg, num_classes=3)
    assert model.classifier.in_features == 4
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_forward_survives_physically_narrowed_layers():
    model = create_model("vgg11", width=0.25)
    model.features[0] = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    model.features[1] = nn.BatchNorm2d(5)
    model.features[4] = nn.Conv2d(5, 32, 3, padding=1, bias=False)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("bad", [{"width": 0}, {"width": -1.0}, {"cfg": [16, "X"]}, {"cfg": ["M"]}])
def test_bad_constructor_arguments(bad):
    with pytest.raises(ValueError):
        VGG(**bad)
