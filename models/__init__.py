"""Architectures by name: CIFAR VGG, pre-activation ResNet, DenseNet, and torchvision CNNs.

`create_model(arch, num_classes, **kwargs)` builds an architecture the user names (in code or on the
command line); `build_from_file(arch, kwargs, trust=...)` builds one that a file names, after checking that
the user trusts the code it imports (compress.models.trust). The same (arch, kwargs) always rebuilds the same
architecture.
"""

from __future__ import annotations

import difflib
import re

import torch.nn as nn

from .errors import UnknownArchError

__all__ = ["create_model", "build_from_file", "resolved_kwargs", "available_models", "UnknownArchError",
           "parse_name"]

OWN_EXAMPLES = ["vgg11", "vgg13", "vgg16", "vgg19", "preresnet20", "preresnet56", "preresnet110",
                "preresnet164", "densenet40", "densenet100"]
TV_PREFIX = "tv_"


def available_models() -> list[str]:
    """Names and patterns for help text."""
    from .tv import torchvision_names

    return ["vgg11", "vgg13", "vgg16", "vgg19", "preresnet<9n+2> (e.g. preresnet164)",
            "densenet<3n+4> (e.g. densenet40)"] + [
        n for n in torchvision_names() if n not in OWN_EXAMPLES] + [
        f"{TV_PREFIX}<torchvision name> (e.g. {TV_PREFIX}vgg19_bn, {TV_PREFIX}densenet121)"]


def parse_name(name: str) -> tuple[str, dict]:
    """(family, family kwargs) for `name`; our CIFAR families win over torchvision's
    names (vgg19, densenet121), which stay reachable as tv_<name>."""
    if not isinstance(name, str):
        raise UnknownArchError(f"architecture name must be a string, got {name!r}")
    key = name.strip().lower()
    m = re.fullmatch(r"vgg(\d+)", key)
    if m and int(m.group(1)) in (11, 13, 16, 19):
        return "vgg", {"depth": int(m.group(1))}
    m = re.fullmatch(r"preresnet(\d+)", key)
    if m:
        from .preresnet import check_depth

        check_depth(int(m.group(1)))
        return "preresnet", {"depth": int(m.group(1))}
    m = re.fullmatch(r"densenet(\d+)", key)
    if m:
        from .densenet import check_depth

        check_depth(int(m.group(1)))
        return "densenet", {"depth": int(m.group(1))}
    from .tv import torchvision_names

    tv_names = torchvision_names()
    tv_key = key[len(TV_PREFIX):] if key.startswith(TV_PREFIX) else key
    if tv_key in tv_names:
        return "torchvision", {"name": tv_key}
    candidates = OWN_EXAMPLES + [n for n in tv_names if n not in OWN_EXAMPLES]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see available_models()"
    raise UnknownArchError(f"unknown architecture {name!r}{hint}")


def _check_kwargs(name: str, kwargs: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"{name} does not accept argument(s) {', '.join(unknown)}; "
                         f"it accepts {', '.join(allowed)}")


def resolved_kwargs(name: str, kwargs: dict) -> dict:
    """The kwargs to record next to `name` (in model.json) so that create_model(name, **result)
    rebuilds exactly the model that create_model(name, **kwargs) builds: choices that other
    arguments imply (a torchvision network's stem, from image_size) are written out."""
    from .user import is_import_path

    if is_import_path(name):
        return dict(kwargs)
    family, _fixed = parse_name(name)
    if family != "torchvision":
        return dict(kwargs)
    from .tv import resolved_kwargs as tv_resolved

    return tv_resolved(_fixed["name"], kwargs)


def create_model(arch: str, /, num_classes: int | None = 10, **kwargs) -> nn.Module:
    """Build an untrained model; all families take 3x32x32 inputs by default.

    `arch` may also be ``package.module:Name`` for a user's own nn.Module class, a known factory
    (``timm:create_model`` with ``model_name=...``; ``ultralytics.nn.tasks:DetectionModel`` with ``cfg=...``) or
    a factory function of a module the user trusts: `kwargs` go to it, and `num_classes` too when it takes
    that argument (None: never passed). `arch` is positional-only, so a constructor argument of any name
    (even ``arch`` or ``name``) reaches the constructor.

    vgg*: width, bn_init, cfg. preresnet*: width, bn_init. densenet*: width, growth_rate,
    bn_init. torchvision: cifar_stem, bn_init, image_size, and the builder's own options
    (torchvision's ImageNet stem at image_size >= 64, so its state_dicts load there).
    bn_init (default 0.5) sets every BatchNorm γ; None keeps PyTorch's 1.0.
    """
    from .trust import is_trusted, trusted_entries
    from .user import accepts, build_user_model, check_spec, is_import_path, resolve

    if is_import_path(arch):
        check_spec(arch)
        functions = is_trusted(arch, trusted_entries())
        if num_classes is not None and "num_classes" not in kwargs and accepts(
                resolve(arch, functions=functions), "num_classes"):
            kwargs = {**kwargs, "num_classes": num_classes}
        return build_user_model(arch, kwargs, functions=functions)
    return _create_registered(arch, num_classes, kwargs)


def build_from_file(arch: str, kwargs: dict, *, trust=None, where: str = "model.json") -> nn.Module:
    """The architecture a file (`where`) names, with exactly the recorded arguments. An import path must be
    a known entry point or one the user trusts (`trust`, COMPRESS_TRUSTED_CODE, ``compress --trust``); it is
    checked before anything is imported, and the current directory is not searched for it."""
    from .trust import check_trusted, is_trusted, trusted_entries
    from .user import build_user_model, check_spec, is_import_path

    if not isinstance(kwargs, dict):
        raise ValueError(f"{where}: arch_kwargs must be a JSON object, got {type(kwargs).__name__}")
    if is_import_path(arch):
        check_spec(arch)
        check_trusted(arch, trust, where)
        functions = is_trusted(arch, trusted_entries(trust))
        return build_user_model(arch, kwargs, search_cwd=False, functions=functions)
    kwargs = dict(kwargs)
    return _create_registered(arch, kwargs.pop("num_classes", 10), kwargs)


def _create_registered(name: str, num_classes: int | None, kwargs: dict) -> nn.Module:
    if num_classes is None:
        num_classes = 10
    family, fixed = parse_name(name)
    if family == "vgg":
        from .vgg import VGG

        _check_kwargs(name, kwargs, ("width", "bn_init", "cfg"))
        return VGG(num_classes=num_classes, **fixed, **kwargs)
    if family == "preresnet":
        from .preresnet import PreResNet

        _check_kwargs(name, kwargs, ("width", "bn_init"))
        return PreResNet(num_classes=num_classes, **fixed, **kwargs)
    if family == "densenet":
        from .densenet import DenseNet

        _check_kwargs(name, kwargs, ("width", "growth_rate", "bn_init"))
        return DenseNet(num_classes=num_classes, **fixed, **kwargs)
    from .tv import build_torchvision

    return build_torchvision(fixed["name"], num_classes=num_classes, **kwargs)
