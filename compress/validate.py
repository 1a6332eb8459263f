"""Complete checks of the files the toolkit reads: refused when they can't be right, never cast.

Pure functions over already-parsed JSON (and tensors' dtype/shape), so every loader, `info`, and the
tests call the same code. Each raises `InvalidFileError` (a CompressError) with one line naming the
file and the field at fault.

* `validate_plan(plan, where)`: a `compress.plan/1` or `/2` pruning plan.
* `validate_model_meta(meta, where)`: a `compress.model/1` model.json.
* `validate_attributes(attributes, where)`: the module attributes a model.json records (compress.attributes).
* `check_state(state, expected, where)`: loaded tensors against the ones a module expects (names,
  dtypes, shapes): float tensors stored as int8 are refused here rather than cast by load_state_dict.
* `check_finite(tensors, where)`: NaN or infinity in weights, naming the first tensor that holds one.

Every list and count is bounded (compress.limits) before it is looped over: a plan's kept lists by the
layer's channel count (and by the model's, when `channels` is given), the layers by MAX_LAYERS.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from compress.errors import CompressError
from compress.limits import (
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_IMAGE_SIDE,
    MAX_LAYERS,
    MAX_PLAN_CHANNELS,
    MAX_WIDTH,
    check_count,
)
from compress.request import SHARED

PLAN_FORMATS = ("compress.plan/1", "compress.plan/2")  # compress.slimming.OLD_PLAN_FORMAT, PLAN_FORMAT
MODEL_FORMAT = "compress.model/1"  # compress.artifact.FORMAT
CONV_TYPES = ("Conv1d", "Conv2d", "Conv3d")
LAYER_TYPES = {
    **{kind: ("in_channels", "out_channels", "groups") for kind in CONV_TYPES},
    "BatchNorm1d": ("num_features",),
    "BatchNorm2d": ("num_features",),
    "BatchNorm3d": ("num_features",),
    "SelectBatchNorm2d": ("num_features", "in_channels"),
    "Linear": ("in_features", "out_features"),
}


MAX_ATTRIBUTE_VALUES = 4096  # ints in one module attribute (a split into more parts than any network has)


class InvalidFileError(CompressError):
    """A file whose content can't be right (wrong types, duplicates, disagreeing counts)."""


def _where(where: str, field: str) -> str:
    return f"{where}: {field}" if field else where


def is_int(value: Any) -> bool:
    """A JSON integer: not a bool, not 1.0, not "1"."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _int(value, where, field, lo=None, hi=None) -> int:
    if not is_int(value):
        raise InvalidFileError(f"{_where(where, field)} must be an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise InvalidFileError(f"{_where(where, field)} must be {bounds}, got {value}")
    return value


def _number(value, where, field, lo=None, hi=None, lo_open=False) -> float:
    if not is_number(value):
        raise InvalidFileError(f"{_where(where, field)} must be a finite number, got {value!r}")
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise InvalidFileError(f"{_where(where, field)} must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise InvalidFileError(f"{_where(where, field)} must be <= {hi}, got {value}")
    return float(value)


def _str(value, where, field) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidFileError(f"{_where(where, field)} must be a non-empty string, got {value!r}")
    return value


def _dict(value, where, field) -> dict:
    if not isinstance(value, dict):
        raise InvalidFileError(f"{_where(where, field)} must be an object, got {type(value).__name__}")
    return value


def _list(value, where, field) -> list:
    if not isinstance(value, list):
        raise InvalidFileError(f"{_where(where, field)} must be a list, got {type(value).__name__}")
    return value


# --- plan.json -------------------------------------------------------------------------------------

def validate_plan(plan: Any, where: str = "plan.json", channels: Mapping[str, int] | None = None) -> dict:
    """The plan itself, once every field has the right type and the counts agree.

    Lists are bounded before they are looped over: groups and selections by MAX_LAYERS, their channels
    by MAX_PLAN_CHANNELS in all, each kept list by its layer's channel count. With `channels` (BN name or
    group root → the model's channel count), a layer's channels_before must be the model's."""
    plan = _dict(plan, where, "")
    _plan_settings(plan, where)
    groups = _list(plan["groups"], where, "groups")
    selections = _list(plan.get("selections", []), where, "selections")
    if not groups and not selections:
        raise InvalidFileError(f"{where}: groups is empty")
    check_count(len(groups) + len(selections), MAX_LAYERS, f"{where}: the number of groups and selections",
                "MAX_LAYERS")
    units = (("group", groups, "root"), ("selection", selections, "bn"))
    # The bound before any list is looped over; each value's own type and range are checked in order below.
    total = sum(g["channels_before"] for _, items, _ in units for g in items
                if isinstance(g, dict) and is_int(g.get("channels_before")) and 0 < g["channels_before"] <= MAX_WIDTH)
    check_count(total, MAX_PLAN_CHANNELS, f"{where}: the channels of all groups", "MAX_PLAN_CHANNELS")
    before_total = after_total = 0
    for kind, items, name_key in units:
        names: set[str] = set()
        for i, g in enumerate(items):
            n, kept = _plan_unit(_dict(g, where, f"{kind}s[{i}]"), kind, i, name_key, names, where, channels)
            before_total += n
            after_total += kept
    for key, total in (("channels_before", before_total), ("channels_after", after_total)):
        if key in plan and _int(plan[key], where, key, 0) != total:
            raise InvalidFileError(f"{where}: {key} is {plan[key]} but the groups add up to {total}")
    if "pruned_fraction" in plan:
        frac = _number(plan["pruned_fraction"], where, "pruned_fraction", 0.0, 1.0)
        if abs(frac - (1 - after_total / before_total)) > 1e-6:
            raise InvalidFileError(f"{where}: pruned_fraction is {frac} but the groups give "
                                   f"{1 - after_total / before_total:.6f}")
    return plan


def _plan_settings(plan: dict, where: str) -> None:
    """format, threshold, percent or budget, and the floors."""
    if plan.get("format") not in PLAN_FORMATS:
        raise InvalidFileError(f"{where} is not a compress pruning plan (format {plan.get('format')!r})")
    for key in ("threshold", "groups"):
        if key not in plan:
            raise InvalidFileError(f"{where} lacks {key}")
    _number(plan["threshold"], where, "threshold")
    if plan.get("budget") is None or plan.get("percent") is not None:
        if "percent" not in plan:
            raise InvalidFileError(f"{where} lacks percent")
        percent = _number(plan["percent"], where, "percent")
        if not 0.0 < percent < 1.0:
            raise InvalidFileError(f"{where}: percent must lie in (0, 1), got {percent}")
    if plan.get("budget") is not None:
        budget = _dict(plan["budget"], where, "budget")
        if budget.get("target") not in ("macs", "params", "latency_ms"):
            raise InvalidFileError(f"{where}: budget target must be macs, params or latency_ms, "
                                   f"got {budget.get('target')!r}")
        # A latency is asked in milliseconds, a cost as a fraction of the unpruned network's.
        _number(budget.get("asked"), where, "budget asked", 0.0, None if budget["target"] == "latency_ms" else 1.0,
                lo_open=True)
    if plan.get("shared", "select") not in SHARED:
        raise InvalidFileError(f"{where}: shared must be select or narrow, got {plan['shared']!r}")
    if "min_keep" in plan:
        _number(plan["min_keep"], where, "min_keep", 0.0, 1.0)
    for key in ("min_channels", "round_to"):
        if key in plan:
            value = _int(plan[key], where, key, lo=1 if key == "round_to" else 0)
            check_count(value, MAX_WIDTH, f"{where}: {key}", "MAX_WIDTH, the widest layer")


def _plan_unit(g: dict, kind: str, i: int, name_key: str, names: set, where: str,
               channels: Mapping[str, int] | None) -> tuple[int, int]:
    """One group or selection: (channels before, channels kept)."""
    name = _str(g.get(name_key), where, f"{kind}s[{i}].{name_key}")
    field = f"{kind} {name}"
    if name in names:
        raise InvalidFileError(f"{where}: layer {name} appears in two {kind}s")
    names.add(name)
    n = _int(g.get("channels_before"), where, f"{field} channels_before", 1, MAX_WIDTH)
    if channels is not None:
        if name not in channels:
            raise InvalidFileError(f"{where}: {field} names no BatchNorm layer of the model")
        if channels[name] != n:
            raise InvalidFileError(f"{where}: {field} has channels_before {n}, the model's layer has "
                                   f"{channels[name]}")
    kept = _indices(g.get("kept"), where, f"{field} kept", n)
    if "channels_after" in g and _int(g["channels_after"], where, f"{field} channels_after") != len(kept):
        raise InvalidFileError(f"{where}: {field} channels_after is {g['channels_after']} but kept lists "
                               f"{len(kept)} channels")
    if kind == "selection":
        width = _int(g.get("input_channels"), where, f"{field} input_channels", 1, MAX_WIDTH)
        if "selected" in g:
            selected = _indices(g["selected"], where, f"{field} selected", width)
            if len(selected) != len(kept):
                raise InvalidFileError(f"{where}: {field} selects {len(selected)} channels but keeps "
                                       f"{len(kept)}")
    elif "bn_layers" in g:
        layers = _list(g["bn_layers"], where, f"{field} bn_layers")
        check_count(len(layers), MAX_LAYERS, f"{where}: {field} bn_layers", "MAX_LAYERS")
        for layer in layers:
            _str(layer, where, f"{field} bn_layers")
    return n, len(kept)


def _indices(value, where: str, field: str, n: int) -> list[int]:
    """Channel indices: integers (not 1.5, not "1"), in [0, n), none twice, at least one, at most n
    (checked first, so a list of millions is refused before it is looped over)."""
    kept = _list(value, where, field)
    if not kept:
        raise InvalidFileError(f"{where}: {field} keeps no channel")
    if len(kept) > n:
        raise InvalidFileError(f"{where}: {field} lists {len(kept):,} channels of a layer that has {n}")
    seen: set[int] = set()
    for idx in kept:
        if not is_int(idx):
            raise InvalidFileError(f"{where}: {field} holds {idx!r}, not an integer channel index")
        if not 0 <= idx < n:
            raise InvalidFileError(f"{where}: {field} holds {idx}, outside [0, {n})")
        if idx in seen:
            raise InvalidFileError(f"{where}: {field} lists channel {idx} more than once")
        seen.add(idx)
    return kept


# --- model.json ------------------------------------------------------------------------------------

def _validate_widths(widths, where) -> int:
    """Check every recorded layer; returns the number of weights they imply (a lower bound)."""
    widths = _dict(widths, where, "widths")
    check_count(len(widths), MAX_LAYERS, f"{where}: the number of layers in widths", "MAX_LAYERS")
    weights = 0
    for name, spec in widths.items():
        field = f"widths.{name}"
        spec = _dict(spec, where, field)
        kind = spec.get("type")
        if kind not in LAYER_TYPES:
            raise InvalidFileError(f"{where}: {field}.type must be one of {', '.join(LAYER_TYPES)}, got {kind!r}")
        values = {k: _int(spec.get(k), where, f"{field}.{k}", 1, MAX_WIDTH) for k in LAYER_TYPES[kind]}
        if "bias" in spec and not isinstance(spec["bias"], bool):
            raise InvalidFileError(f"{where}: {field}.bias must be true or false, got {spec['bias']!r}")
        if kind in CONV_TYPES:
            g = values["groups"]
            if values["in_channels"] % g or values["out_channels"] % g:
                raise InvalidFileError(f"{where}: {field} has {values['in_channels']} → {values['out_channels']} "
                                       f"channels, not divisible by groups {g}")
            weights += values["in_channels"] // g * values["out_channels"]
        elif kind == "Linear":
            weights += values["in_features"] * values["out_features"]
        else:
            weights += 4 * values["num_features"]
            if kind == "SelectBatchNorm2d":
                selected = _indices(spec.get("selected"), where, f"{field}.selected", values["in_channels"])
                if len(selected) != values["num_features"]:
                    raise InvalidFileError(f"{where}: {field} selects {len(selected)} channels for "
                                           f"{values['num_features']} features")
    return weights


def validate_attributes(attributes, where: str) -> dict:
    """Types and bounds of a model.json's `attributes`, before anything is built."""
    if not isinstance(attributes, dict):
        raise InvalidFileError(f"{where}: attributes must be an object, got {type(attributes).__name__}")
    check_count(len(attributes), MAX_LAYERS, f"{where}: the number of modules in attributes", "MAX_LAYERS")
    for name, attrs in attributes.items():
        if not isinstance(attrs, dict) or not attrs:
            raise InvalidFileError(f"{where}: attributes.{name:.80} must be a non-empty object")
        check_count(len(attrs), 64, f"{where}: the attributes of {name:.80}", "64")
        for attr, value in attrs.items():
            field = f"attributes.{name:.80}.{attr:.40}"
            if not attr.isidentifier() or attr.startswith("_"):
                raise InvalidFileError(f"{where}: {field} is not a public attribute name")
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list):
                check_count(len(value), MAX_ATTRIBUTE_VALUES, f"{where}: {field}", "MAX_ATTRIBUTE_VALUES")
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_WIDTH
                                 for v in values):
                raise InvalidFileError(f"{where}: {field} must be an integer or a list of integers in "
                                    f"0..{MAX_WIDTH}, got {value!r:.80}")
    return attributes


def _last_linear(widths: dict) -> tuple[str, int] | None:
    linears = [(n, s["out_features"]) for n, s in widths.items() if s.get("type") == "Linear"]
    return linears[-1] if linears else None


def validate_model_meta(meta: Any, where: str = "model.json", *, check_memory: bool = True,
                        require_format: bool = True) -> dict:
    """model.json once its types, sizes and cross-field counts are right.

    With `check_memory`, the weights the recorded widths imply must fit in available memory
    (compress.limits), so a width of 1e9 is refused before anything is allocated.
    """
    meta = _dict(meta, where, "")
    if (require_format or "format" in meta) and meta.get("format") != MODEL_FORMAT:
        raise InvalidFileError(f"{where} is not a {MODEL_FORMAT} file (format {meta.get('format')!r})")
    missing = [k for k in ("arch", "arch_kwargs", "classes", "input_size", "normalization") if k not in meta]
    if missing:
        raise InvalidFileError(f"{where} lacks {', '.join(missing)}")
    _str(meta["arch"], where, "arch")
    kwargs = _dict(meta["arch_kwargs"], where, "arch_kwargs")
    classes = _list(meta["classes"], where, "classes")
    if not classes:
        raise InvalidFileError(f"{where}: classes is empty")
    check_count(len(classes), MAX_CLASSES, f"{where}: the number of classes", "MAX_CLASSES")
    for c in classes:
        if not isinstance(c, str):
            raise InvalidFileError(f"{where}: classes must be strings, got {c!r}")
        if not c.strip():
            raise InvalidFileError(f"{where}: classes holds an empty name")
    if len(set(classes)) != len(classes):
        seen: set[str] = set()
        dup = next(c for c in classes if c in seen or seen.add(c))
        raise InvalidFileError(f"{where}: class {dup!r} is listed twice")
    if "num_classes" in kwargs:
        n = _int(kwargs["num_classes"], where, "arch_kwargs.num_classes", 1, MAX_WIDTH)
        if n != len(classes):
            raise InvalidFileError(f"{where}: arch_kwargs.num_classes is {n} but classes lists {len(classes)}")
    if "width" in kwargs:
        _number(kwargs["width"], where, "arch_kwargs.width", 0.0, 64.0, lo_open=True)
    size = _list(meta["input_size"], where, "input_size")
    if len(size) != 3:
        raise InvalidFileError(f"{where}: input_size must be [C, H, W], got {size!r}")
    _int(size[0], where, "input_size[0] (channels)", 1, MAX_CHANNELS)
    _int(size[1], where, "input_size[1] (height)", 1, MAX_IMAGE_SIDE)
    _int(size[2], where, "input_size[2] (width)", 1, MAX_IMAGE_SIDE)
    norm = _dict(meta["normalization"], where, "normalization")
    for key in ("mean", "std"):
        values = _list(norm.get(key), where, f"normalization.{key}")
        if len(values) != size[0]:
            raise InvalidFileError(f"{where}: normalization.{key} has {len(values)} values for {size[0]} channels")
        for v in values:
            if key == "std":
                _number(v, where, "normalization.std", 0.0, lo_open=True)
            else:
                _number(v, where, "normalization.mean")
    widths = meta.get("widths")
    if widths is not None:
        weights = _validate_widths(widths, where)
        last = _last_linear(widths)
        if last is not None and last[1] != len(classes):
            raise InvalidFileError(f"{where}: the output layer {last[0]} has {last[1]} outputs but classes lists "
                                   f"{len(classes)}")
        if check_memory:
            from compress.limits import check_allocation

            check_allocation(weights, "float32", f"{where}: the widths")
    if meta.get("attributes") is not None:
        validate_attributes(meta["attributes"], where)
    if meta.get("accuracy") is not None:
        _number(meta["accuracy"], where, "accuracy", 0.0, 1.0)
    for key in ("params", "macs", "flops"):
        if meta.get(key) is not None:
            _int(meta[key], where, key, 0)
    if is_int(meta.get("macs")) and is_int(meta.get("flops")) and meta["flops"] != 2 * meta["macs"]:
        raise InvalidFileError(f"{where}: flops is {meta['flops']} but macs is {meta['macs']} (flops = 2 × macs)")
    return meta


def check_output_width(out_features: int, classes: list, where: str = "model.json") -> None:
    """The network built from model.json must have one output per class."""
    if out_features != len(classes):
        raise InvalidFileError(f"{where}: the network has {out_features} outputs but classes lists {len(classes)}")


# --- tensors ---------------------------------------------------------------------------------------

def check_state(state: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
    """Loaded tensors (name → tensor or array) against the expected ones (e.g. `module.state_dict()`):
    the same names, dtypes and shapes. A float parameter stored as int8 is refused, not cast."""
    missing = [k for k in expected if k not in state]
    if missing:
        raise InvalidFileError(f"{where} lacks tensor {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                        if len(missing) > 1 else ""))
    extra = [k for k in state if k not in expected]
    if extra:
        raise InvalidFileError(f"{where} holds tensor {extra[0]} that the model does not have"
                               + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for name, want in expected.items():
        got = state[name]
        if str(got.dtype) != str(want.dtype):
            raise InvalidFileError(f"{where}: tensor {name} is stored as {_dtype_name(got.dtype)}, the model "
                                   f"needs {_dtype_name(want.dtype)}")
        if tuple(got.shape) != tuple(want.shape):
            raise InvalidFileError(f"{where}: tensor {name} has shape {list(got.shape)}, the model needs "
                                   f"{list(want.shape)}")


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def check_finite(tensors: Mapping[str, Any], where: str) -> None:
    """NaN or infinity in any floating-point tensor (torch or numpy) is refused, naming the first one:
    a network with one NaN weight answers every image with the same class, silently."""
    import numpy as np

    for name, t in tensors.items():
        if hasattr(t, "is_floating_point"):
            if not t.is_floating_point():
                continue
            bad = int((~t.detach().isfinite()).sum())
            total = t.numel()
        else:
            arr = np.asarray(t)
            if arr.dtype.kind not in "fc":
                continue
            bad = int((~np.isfinite(arr)).sum())
            total = arr.size
        if bad:
            raise InvalidFileError(f"{where}: tensor {name} holds NaN or infinity ({bad:,} of {total:,} values); "
                                   "non-finite weights are refused")
