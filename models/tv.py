"""torchvision classification CNNs, built untrained.

At inputs of NATIVE_STEM_MIN_SIZE px and more every network keeps torchvision's own ImageNet stem, so a
torchvision state_dict (a user's fine-tuned checkpoint) loads into it unchanged. Below that, the
resnet/resnext/wide_resnet/mobilenet families get a 3x3 stride-1 stem that keeps a 32x32 input's
resolution; their stem weights then have another shape than torchvision's.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._common import check_num_classes, init_batchnorm

# Attention models: fixed input sizes or patch embeddings make them unusable as CIFAR CNNs.
EXCLUDED_PREFIXES = ("vit_", "swin_", "maxvit_")
# Auxiliary heads return tuples in training mode, which a plain classification loop cannot use.
NO_AUX = ("googlenet", "inception_v3")
# The ImageNet stem divides the input by 4 (resnet) before the first block; at 64 px that still leaves
# 16x16 maps, as the CIFAR stem does at 32 px, so 64 px is where the native stem starts to pay.
NATIVE_STEM_MIN_SIZE = 64


def torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return [n for n in tvm.list_models(module=tvm) if not n.startswith(EXCLUDED_PREFIXES)]


def supports_cifar_stem(name: str) -> bool:
    return name.startswith(("resnet", "resnext", "wide_resnet")) or name in (
        "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")


def default_cifar_stem(name: str, image_size: int) -> bool:
    """The stem chosen when the caller does not say: the small one only for CIFAR-sized inputs."""
    return supports_cifar_stem(name) and image_size < NATIVE_STEM_MIN_SIZE


def resolved_kwargs(name: str, kwargs: dict) -> dict:
    """`kwargs` with the stem choice made explicit (cifar_stem and image_size always present).

    Recording these in model.json keeps a saved model rebuildable even if the default rule changes.
    """
    image_size = kwargs.get("image_size", 32)
    out = dict(kwargs, image_size=image_size)
    if out.get("cifar_stem") is None and isinstance(image_size, int) and not isinstance(image_size, bool):
        out["cifar_stem"] = default_cifar_stem(name, image_size)
    return out


def _apply_cifar_stem(name: str, model: nn.Module) -> None:
    """Keep full 32x32 resolution in the stem: a 3x3 stride-1 first conv, and no max pool."""
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        out = model.conv1.out_channels
        model.conv1 = nn.Conv2d(3, out, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:  # mobilenets: features[0] is Conv2dNormActivation(3, c, 3, stride 2)
        old = model.features[0][0]
        model.features[0][0] = nn.Conv2d(3, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(_first_conv(name, model).weight, mode="fan_out", nonlinearity="relu")


def _first_conv(name: str, model: nn.Module) -> nn.Conv2d:
    if name.startswith(("resnet", "resnext", "wide_resnet")):
        return model.conv1
    return model.features[0][0]


def _probe(name: str, model: nn.Module, image_size: int) -> bool:
    """Forward one blank image so an unusable input size fails now with a clear message.

    Returns False when the check could not run (an op without a kernel for the model's
    device, e.g. meta)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=_device_of(model)))
    except NotImplementedError:
        return False
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{name} does not run on {image_size}x{image_size} inputs ({first}); "
            f"pick another architecture or a larger image_size") from None
    finally:
        model.train(was_training)
    return True


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _build(name: str, builder, kwargs: dict, cifar_stem: bool) -> nn.Module:
    try:
        model = builder(weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot build {name} with arguments {sorted(kwargs)}: {exc}") from None
    if cifar_stem:
        _apply_cifar_stem(name, model)
    return model


def build_torchvision(
    name: str,
    num_classes: int = 10,
    cifar_stem: bool | None = None,
    bn_init: float | None = 0.5,
    image_size: int = 32,
    **kwargs,
) -> nn.Module:
    """Untrained torchvision `name` with `num_classes` outputs.

    cifar_stem defaults to True for the families that support it (resnet, resnext,
    wide_resnet, mobilenet_v2/v3) when image_size < 64, and to False otherwise, so a
    torchvision state_dict loads strictly at 64 px and more. Remaining kwargs go to the
    torchvision builder; `weights` is refused because a model must be rebuildable from
    its name and kwargs alone.
    """
    import torchvision.models as tvm

    check_num_classes(num_classes)
    if "weights" in kwargs:
        raise ValueError("weights cannot be passed: models are built untrained (import a checkpoint instead)")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    builder = tvm.get_model_builder(name)
    if cifar_stem is None:
        cifar_stem = default_cifar_stem(name, image_size)
    if cifar_stem and not supports_cifar_stem(name):
        raise ValueError(f"cifar_stem is only implemented for resnet/resnext/wide_resnet/mobilenet, not {name}")
    kwargs = dict(kwargs, num_classes=num_classes)
    if name in NO_AUX:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    # a shapes-only build on the meta device finds a bad input size without allocating weights
    checked = False
    try:
        with torch.device("meta"):
            checked = _probe(name, _build(name, builder, kwargs, bool(cifar_stem)), image_size)
    except NotImplementedError:  # builders that read tensor values (regnet) cannot run on meta
        pass
    model = _build(name, builder, kwargs, bool(cifar_stem))
    if not checked:
        _probe(name, model, image_size)
    init_batchnorm(model, bn_init)
    return model
