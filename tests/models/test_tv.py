import pytest
import torch
import torch.nn as nn

from models import create_model
from models.tv import torchvision_names


def bn_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_resnet18_cifar_stem_at_32x32():
    model = create_model("resnet18", num_classes=100)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert all(torch.all(w == 0.5) for w in bn_weights(model))


def test_resnet18_imagenet_stem_kept_on_request():
    model = create_model("resnet18", cifar_stem=False)
    assert model.conv1.stride == (2, 2) and isinstance(model.maxpool, nn.MaxPool2d)
    model.eval()  # the ImageNet stem leaves 1x1 maps: train-mode BN needs a batch > 1
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_mobilenet_v2_at_32x32():
    model = create_model("mobilenet_v2", bn_init=None)
    assert model.features[0][0].stride == (1, 1)
    assert all(torch.all(w == 1.0) for w in bn_weights(model))
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_model_that_cannot_run_at_32x32_is_refused():
    with pytest.raises(ValueError, match="32x32"):
        create_model("alexnet")


def test_builder_options_and_refusals():
    model = create_model("mobilenet_v2", width_mult=0.5)
    assert model.features[0][0].out_channels == 16
    with pytest.raises(ValueError, match="weights"):
        create_model("resnet18", weights="DEFAULT")
    with pytest.raises(ValueError, match="not_an_option"):
        create_model("resnet18", not_an_option=1)
    with pytest.raises(ValueError, match="cifar_stem"):
        create_model("squeezenet1_1", cifar_stem=True)


def test_auxiliary_heads_disabled():
    model = create_model("googlenet")
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def test_attention_models_not_listed():
    names = torchvision_names()
    assert "resnet18" in names and "mobilenet_v2" in names
    assert not any(n.startswith(("vit_", "swin_", "maxvit")) for n in names)
