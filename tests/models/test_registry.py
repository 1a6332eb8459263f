import pytest
import torch
import torch.nn as nn

from compress.models import UnknownArchError, available_models, create_model, parse_name


@pytest.mark.parametrize("name,family", [
    ("vgg19", "vgg"), ("VGG11", "vgg"), ("preresnet164", "preresnet"), ("densenet40", "densenet"),
    ("densenet121", "densenet"), ("tv_densenet121", "torchvision"), ("tv_vgg19", "torchvision"),
    ("resnet18", "torchvision"), ("vgg19_bn", "torchvision"),
])
def test_parse_name(name, family):
    assert parse_name(name)[0] == family


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownArchError, match="did you mean.*resnet18") as info:
        create_model("resnet81")
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
    with pytest.raises(UnknownArchError):
        create_model("vgg20")
    with pytest.raises(UnknownArchError):
        create_model("vit_b_16")


def test_unaccepted_kwargs_are_named():
    with pytest.raises(ValueError, match="cifar_stem") as info:
        create_model("vgg11", cifar_stem=True)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="growth_rate"):
        create_model("preresnet20", growth_rate=12)


@pytest.mark.parametrize("name,kwargs", [
    ("vgg11", {"width": 0.125}), ("preresnet20", {"width": 0.25}), ("densenet10", {"width": 0.25}),
])
def test_bn_init_everywhere(name, kwargs):
    model = create_model(name, **kwargs)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.all(b.weight == 0.5) and torch.all(b.bias == 0) for b in bns)
    model = create_model(name, bn_init=0.25, **kwargs)
    assert all(torch.all(b.weight == 0.25) for b in model.modules() if isinstance(b, nn.BatchNorm2d))
    model = create_model(name, bn_init=None, **kwargs)
    assert all(torch.all(b.weight == 1.0) for b in model.modules() if isinstance(b, nn.BatchNorm2d))


@pytest.mark.parametrize("name,num_classes,kwargs", [
    ("vgg16", 100, {"width": 0.125}), ("preresnet11", 7, {"width": 0.5}),
    ("densenet7", 10, {"growth_rate": 6}), ("resnet18", 5, {"cifar_stem": True}),
])
def test_rebuildable_from_name_and_kwargs(name, num_classes, kwargs):
    a = create_model(name, num_classes=num_classes, **kwargs)
    b = create_model(name, num_classes=num_classes, **kwargs)
    b.load_state_dict(a.state_dict(), strict=True)
    a.eval(), b.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_available_models_lists_patterns_and_torchvision():
    names = available_models()
    assert "vgg19" in names and "resnet18" in names
    assert any("9n+2" in n for n in names) and any("3n+4" in n for n in names)
