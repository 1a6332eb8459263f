"""Per-layer widths in model.json: what each convolution (1-, 2- or 3-d), BatchNorm (1-, 2- or 3-d) and Linear looks
like after pruning, and how an unpruned network is resized to them.

A layer's kind (the `type` of its entry) is the class it derives from, so subclasses that carry more than
their base (timm's BatchNormAct2d with its activation, timm's Conv2dSame with its padding) keep their class,
settings and submodules when they are resized: the module is copied and only its shape-defining tensors
are replaced. Such a layer's entry also names its `class`, and a network whose layer there is of another
class is refused rather than loaded with another behaviour.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from compress.errors import CompressError

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # a Conv1d or Conv3d that reads pruned channels is cut too
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
BASES = (*CONVS, *NORMS, nn.Linear)


def _base(m: nn.Module, bases: tuple[type, ...]) -> type | None:
    return next((b for b in bases if isinstance(m, b)), None)


def qualified_class(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def layer_spec(m: nn.Module) -> dict | None:
    """The widths entry of one module, or None for a module without one."""
    from compress.channel_select import SelectBatchNorm2d, width_spec

    if isinstance(m, SelectBatchNorm2d):  # a BN reading some channels of a wider input
        spec = width_spec(m)
        base = SelectBatchNorm2d
    elif _base(m, CONVS):
        base = _base(m, CONVS)
        spec = {"type": base.__name__, "in_channels": m.in_channels, "out_channels": m.out_channels,
                "groups": m.groups, "bias": m.bias is not None}
    elif _base(m, NORMS):  # a BatchNorm1d after a Linear head prunes too
        base = _base(m, NORMS)
        spec = {"type": base.__name__, "num_features": m.num_features}
    elif isinstance(m, nn.Linear):
        spec = {"type": "Linear", "in_features": m.in_features, "out_features": m.out_features,
                "bias": m.bias is not None}
        base = nn.Linear
    else:
        return None
    if type(m) is not base:
        spec["class"] = qualified_class(m)
    return spec


def apply_widths(model: nn.Module, widths: dict[str, dict]) -> None:
    """Replace each recorded layer with one of the recorded width, keeping its class and other settings."""
    from compress.channel_select import WIDTH_TYPE as SELECT_TYPE

    modules = dict(model.named_modules())
    for name, spec in widths.items():
        old = modules.get(name)
        current = layer_spec(old) if old is not None else None
        # A plain BN of the unpruned architecture becomes a selecting one where slimming put a selection.
        selects = spec.get("type") == SELECT_TYPE and current is not None and current["type"] == "BatchNorm2d"
        if current is None or (current["type"] != spec.get("type") and not selects):
            found = ("does not have" if old is None else
                     f"builds as a {type(old).__name__}, not a {spec.get('type')}")
            raise CompressError(f"widths name a layer {name!r} ({spec.get('type')}) that "
                                f"{type(model).__name__} {found}")
        wanted = spec.get("class")
        if wanted is not None and not selects and wanted != current.get("class"):
            raise CompressError(f"widths name layer {name!r} as a {wanted}, but {type(model).__name__} has a "
                                f"{qualified_class(old)} there")
        new = _resized(old, spec)
        if new is not old:
            _set_submodule(model, name, new)


def _resized(m: nn.Module, spec: dict) -> nn.Module:
    from compress.channel_select import WIDTH_TYPE, from_width_spec

    if spec.get("type") == WIDTH_TYPE:
        new = from_width_spec(m, spec)
        if not isinstance(new, type(m)):
            # A selection replaces the module; a BN subclass would lose what it adds (an activation, ...).
            raise CompressError(f"a channel selection on a {qualified_class(m)} cannot be rebuilt without "
                                "changing what that layer computes")
        return new
    if _base(m, CONVS):
        bias = spec.get("bias", m.bias is not None)
        if (m.in_channels, m.out_channels, m.groups, m.bias is not None) == (
                spec["in_channels"], spec["out_channels"], spec["groups"], bias):
            return m
        if type(m) in CONVS:
            return type(m)(spec["in_channels"], spec["out_channels"], m.kernel_size, m.stride, m.padding,
                           m.dilation, spec["groups"], bias, m.padding_mode)
        return _resized_conv(m, spec["in_channels"], spec["out_channels"], spec["groups"], bias)
    if _base(m, NORMS):
        if m.num_features == spec["num_features"]:
            return m
        if type(m) in NORMS:
            return type(m)(spec["num_features"], m.eps, m.momentum, m.affine, m.track_running_stats)
        return _resized_bn(m, spec["num_features"])
    if isinstance(m, nn.Linear):
        bias = spec.get("bias", m.bias is not None)
        if (m.in_features, m.out_features, m.bias is not None) == (spec["in_features"], spec["out_features"], bias):
            return m
        if type(m) is nn.Linear:
            return nn.Linear(spec["in_features"], spec["out_features"], bias)
        return _resized_linear(m, spec["in_features"], spec["out_features"], bias)
    raise CompressError(f"cannot resize a {type(m).__name__}")


def _copy_without(m: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """A deep copy of `m` that does not copy the tensors about to be replaced."""
    saved = {}
    for n in names:
        store = m._parameters if n in m._parameters else m._buffers if n in m._buffers else None
        if store is not None:
            saved[n] = (store, store[n])
            store[n] = None
    try:
        new = copy.deepcopy(m)
    finally:
        for n, (store, value) in saved.items():
            store[n] = value
    return new


def _like(t: torch.Tensor | None, shape) -> torch.Tensor:
    return torch.empty(shape, dtype=t.dtype if t is not None else torch.float32,
                       device=t.device if t is not None else "cpu")


def _resized_bn(m: nn.modules.batchnorm._BatchNorm, n: int) -> nn.modules.batchnorm._BatchNorm:
    new = _copy_without(m, ("weight", "bias", "running_mean", "running_var"))
    new.num_features = n
    if m.weight is not None:
        new.weight = nn.Parameter(_like(m.weight, (n,)), requires_grad=m.weight.requires_grad)
        new.bias = nn.Parameter(_like(m.bias, (n,)), requires_grad=m.bias.requires_grad)
    if m.running_mean is not None:
        new.running_mean = _like(m.running_mean, (n,))
        new.running_var = _like(m.running_var, (n,))
    _base(m, NORMS).reset_parameters(new)
    return new


def _resized_conv(m: nn.modules.conv._ConvNd, c_in: int, c_out: int, groups: int, bias: bool) -> nn.Module:
    new = _copy_without(m, ("weight", "bias"))
    new.in_channels, new.out_channels, new.groups = c_in, c_out, groups
    new.weight = nn.Parameter(_like(m.weight, (c_out, c_in // groups, *m.kernel_size)))
    new.bias = nn.Parameter(_like(m.weight, (c_out,))) if bias else None
    _base(m, CONVS).reset_parameters(new)
    return new


def _resized_linear(m: nn.Linear, f_in: int, f_out: int, bias: bool) -> nn.Linear:
    new = _copy_without(m, ("weight", "bias"))
    new.in_features, new.out_features = f_in, f_out
    new.weight = nn.Parameter(_like(m.weight, (f_out, f_in)))
    new.bias = nn.Parameter(_like(m.weight, (f_out,))) if bias else None
    nn.Linear.reset_parameters(new)
    return new


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
