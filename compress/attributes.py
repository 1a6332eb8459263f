"""Module attributes that pruning rewrote, recorded in model.json so that a rebuilt network splits as the
pruned one does.

Widths (compress.widths) describe the layers. Some networks also keep channel counts in plain attributes
their forward reads: timm's MixedConv2d.splits, Res2Net's `width`, timm's CSP `expand_chs`, ultralytics'
C2f `c`. Pruning rewrites them (compress.slimming.splits); a model directory records every such attribute
that differs from the unpruned architecture, as `attributes: {module: {name: int or [int, ...]}}`.
Only plain, public integer attributes that the rebuilt module already has, of the same kind and length,
and no larger (pruning only lowers them), are ever set from a file: a model.json cannot add an attribute,
change its type or raise a size.
"""

from __future__ import annotations

from torch import nn

from compress.errors import CompressError
from compress.validate import validate_attributes
from compress.widths import BASES


def _kind(value) -> tuple[str, int] | None:
    """('int', 1) or (list/tuple, length) for an attribute that can hold channel counts; None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "int", 1
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and not isinstance(v, bool)
                                                         for v in value):
        return type(value).__name__, len(value)
    return None


def _plain(value):
    return int(value) if isinstance(value, int) else [int(v) for v in value]


def _plain_list(value) -> list[int]:
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def changed_attributes(reference: nn.Module, model: nn.Module) -> dict[str, dict]:
    """The integer attributes of `model`'s modules that differ from `reference` (the same architecture,
    unpruned), by module name; layers' own sizes are left to the widths."""
    theirs = dict(reference.named_modules())
    changed: dict[str, dict] = {}
    for name, module in model.named_modules():
        ref = theirs.get(name)
        if ref is None or type(ref) is not type(module) or isinstance(module, BASES):
            continue
        for attr, value in vars(module).items():
            if attr.startswith("_") or _kind(value) is None or attr not in vars(ref):
                continue
            old = vars(ref)[attr]
            if _kind(old) == _kind(value) and _plain(old) != _plain(value):
                changed.setdefault(name, {})[attr] = _plain(value)
    return changed


def apply_attributes(model: nn.Module, attributes: dict, where: str = "model.json") -> None:
    """Set the recorded attributes on `model`, each one only where the module already has it, of that kind."""
    modules = dict(model.named_modules())
    for name, attrs in validate_attributes(attributes, where).items():
        module = modules.get(name)
        if module is None or isinstance(module, BASES):
            raise CompressError(f"{where}: attributes name a module {name!r:.80} that {type(model).__name__} "
                                "does not have")
        for attr, value in attrs.items():
            old = vars(module).get(attr)
            kind = _kind(old)
            want = ("int", 1) if isinstance(value, int) else (kind[0] if kind else None, len(value))
            if kind is None or kind != want:
                raise CompressError(f"{where}: attributes.{name}.{attr} is {value!r:.60}, but the "
                                    f"{type(module).__name__} there holds {old!r:.60}")
            if any(v > o for v, o in zip(_plain_list(value), _plain_list(old))):
                # pruning keeps a subset of channels, so it only ever lowers these counts; a larger value
                # (an AdaptiveAvgPool2d's output_size of 4000) would only make the forward allocate
                raise CompressError(f"{where}: attributes.{name}.{attr} is {value!r:.60}, larger than the "
                                    f"{old!r:.60} of the unpruned {type(module).__name__}; pruning only lowers it")
            setattr(module, attr, value if kind[0] == "int" else type(old)(value))
