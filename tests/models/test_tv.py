import pytest
import torch
import torch.nn as nn

from compress.models import create_model
from compress.models.tv import torchvision_names


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


@pytest.mark.parametrize("image_size", [64, 224])
def test_torchvision_checkpoint_loads_strictly_at_native_sizes(image_size):
    import torchvision.models as tvm

    for name in ("resnet18", "mobilenet_v2"):
        state = tvm.get_model(name, weights=None, num_classes=7).state_dict()
        model = create_model(name, num_classes=7, image_size=image_size)
        model.load_state_dict(state, strict=True)
        model.eval()
        assert model(torch.randn(1, 3, image_size, image_size)).shape == (1, 7)


def test_cifar_sized_inputs_keep_the_small_stem():
    import torchvision.models as tvm

    for size in (32, 48, 63):
        model = create_model("resnet18", num_classes=7, image_size=size)
        assert model.conv1.kernel_size == (3, 3) and isinstance(model.maxpool, nn.Identity)
    state = tvm.resnet18(num_classes=7).state_dict()
    with pytest.raises(RuntimeError, match="conv1.weight"):
        create_model("resnet18", num_classes=7, image_size=32).load_state_dict(state, strict=True)
    assert create_model("mobilenet_v2", image_size=48).features[0][0].stride == (1, 1)
    assert create_model("mobilenet_v2", image_size=64).features[0][0].stride == (2, 2)


def test_resolved_kwargs_record_the_stem_so_a_rebuild_matches():
    from compress.models import resolved_kwargs

    assert resolved_kwargs("resnet18", {"num_classes": 7, "image_size": 64}) == {
        "num_classes": 7, "image_size": 64, "cifar_stem": False}
    assert resolved_kwargs("resnet18", {"num_classes": 7})["cifar_stem"] is True
    assert resolved_kwargs("squeezenet1_1", {"image_size": 32})["cifar_stem"] is False
    assert resolved_kwargs("resnet18", {"image_size": 32, "cifar_stem": False})["cifar_stem"] is False
    assert resolved_kwargs("vgg11", {"width": 0.5}) == {"width": 0.5}
    for asked in ({"image_size": 48}, {"image_size": 96}, {"image_size": 96, "cifar_stem": True}):
        kwargs = resolved_kwargs("resnet18", {"num_classes": 3, **asked})
        first, again = create_model("resnet18", **asked, num_classes=3), create_model("resnet18", **kwargs)
        assert first.conv1.weight.shape == again.conv1.weight.shape
        assert type(first.maxpool) is type(again.maxpool)
