"""Ultralytics task models (DetectionModel, ...) built from a cfg that a file may hold: checked first.

Ultralytics builds a network from a cfg dict by looking every layer's module name up in its own namespace
and, for the `activation` key, by evaluating a Python expression. A cfg from a stranger could therefore
name any function that module imports (checkpoint loaders among them) or any expression. Here every layer
must be an nn.Module class of ultralytics' layer library (ultralytics.nn.modules), torch.nn or
torchvision.ops; the activation must be a torch.nn class with literal arguments; sizes are bounded; and a
cfg named by file is looked up only among the yaml files ultralytics ships (never the current directory,
never a URL). Ultralytics is AGPL: it is imported only here, when a model names it, never copied.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import torch.nn as nn

from .errors import UnknownArchError

MAX_LAYERS = 1024
MAX_REPEATS = 64
MAX_MULTIPLE = 4.0
MAX_CHANNELS = 1 << 14
MAX_INT_ARG = 1 << 16
MAX_CLASSES = 1 << 20
# A layer that downloads pretrained torchvision weights while it is built.
REFUSED_LAYERS = ("TorchVision",)
# The number class carries its own signs: an optional sign before it would let each argument match two
# ways, and a failing match would backtrack through 2^arguments of them.
_ACTIVATION = re.compile(r"^(?:torch\.)?nn\.([A-Za-z_]\w*)\(\s*((?:[\d.eE+-]+|True|False)"
                         r"(?:\s*,\s*(?:[\d.eE+-]+|True|False))*)?\s*\)$")
MAX_ACTIVATION_CHARS = 200
MAX_CFG_NAME_CHARS = 100
_CFG_NAME = re.compile(r"^[\w.-]+\.ya?ml$")


def task_arguments(spec: str, kwargs: dict) -> dict:
    """`kwargs` for an ultralytics task model, with `cfg` as a checked dict (a file name resolved among
    ultralytics' own cfg files first)."""
    kwargs = dict(kwargs)
    cfg = kwargs.get("cfg")
    if cfg is None:
        raise ValueError(f"{spec} needs the argument cfg (a model cfg dict, or the name of a cfg that "
                         "ultralytics ships, such as 'yolov8n.yaml')")
    if isinstance(cfg, str):
        cfg = packaged_cfg(cfg)
    if not isinstance(cfg, dict):
        raise ValueError(f"{spec}: cfg must be a dict or a cfg file name, got {type(cfg).__name__}")
    for key, hi in (("ch", 64), ("nc", MAX_CLASSES)):
        value = kwargs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi):
            raise ValueError(f"{spec}: {key} must be an integer in 1..{hi}, got {value!r:.40}")
    cfg = copy.deepcopy(cfg)
    if kwargs.get("nc"):
        cfg["nc"] = kwargs["nc"]  # what ultralytics would do, without its log line about overriding
    kwargs["cfg"] = check_cfg(cfg, spec)
    return kwargs


def packaged_cfg(name: str) -> dict:
    """The cfg dict of a yaml file that ultralytics ships, by file name (``yolov8n.yaml``: the ``n`` scale of
    ``yolov8.yaml``)."""
    import yaml

    import ultralytics

    if not _CFG_NAME.match(name):
        raise ValueError(f"cfg {name!r:.80} is not the file name of a cfg that ultralytics ships "
                         "(paths and URLs are not read)")
    root = Path(ultralytics.__file__).resolve().parent / "cfg" / "models"
    found = {p.name: p for p in root.rglob("*.yaml")}
    scale = None
    path = found.get(name)
    if path is None:
        # Ultralytics names a scale by one letter after the version number, not in the file name.
        # (Ultralytics' names are short; a long one would make this pattern backtrack quadratically.)
        m = re.match(r"^(.*\d)([nslmx])((?:-[\w-]+)?)\.ya?ml$", name) if len(name) <= MAX_CFG_NAME_CHARS else None
        if m:
            path, scale = found.get(f"{m.group(1)}{m.group(3)}.yaml"), m.group(2)
    if path is None:
        raise UnknownArchError(f"ultralytics ships no model cfg {name!r}")
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} does not hold a cfg mapping")
    if scale is not None:
        if scale not in (cfg.get("scales") or {}):
            raise UnknownArchError(f"ultralytics cfg {path.name} has no scale {scale!r}")
        cfg["scale"] = scale
    cfg["yaml_file"] = name
    return cfg


def check_cfg(cfg: dict, where: str) -> dict:
    """`cfg` once every layer names a known layer class and every size is bounded."""
    layers = [*_list(cfg.get("backbone"), where, "backbone"), *_list(cfg.get("head"), where, "head")]
    if not layers or len(layers) > MAX_LAYERS:
        raise ValueError(f"{where}: cfg must hold 1..{MAX_LAYERS} layers, got {len(layers)}")
    for i, layer in enumerate(layers):
        _check_layer(layer, i, where)
    for key in ("depth_multiple", "width_multiple"):
        if key in cfg:
            _multiple(cfg[key], where, key)
    scales = cfg.get("scales")
    if scales is not None:
        if not isinstance(scales, dict):
            raise ValueError(f"{where}: cfg scales must be a mapping")
        for name, values in scales.items():
            if not (isinstance(values, list) and len(values) == 3):
                raise ValueError(f"{where}: cfg scale {name!r} must be [depth, width, max_channels]")
            _multiple(values[0], where, f"scales.{name} depth")
            _multiple(values[1], where, f"scales.{name} width")
            _int(values[2], where, f"scales.{name} max_channels", MAX_CHANNELS)
    if cfg.get("nc") is not None:
        _int(cfg["nc"], where, "nc", MAX_CLASSES)
    act = cfg.get("activation")
    if act is not None:
        m = _ACTIVATION.match(act) if isinstance(act, str) and len(act) <= MAX_ACTIVATION_CHARS else None
        cls = getattr(nn, m.group(1), None) if m else None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"{where}: cfg activation must be a torch.nn class with literal arguments, such as "
                             f"'nn.SiLU()', got {act!r:.80}")
    return cfg


def _check_layer(layer, i: int, where: str) -> None:
    if not (isinstance(layer, list) and len(layer) == 4):
        raise ValueError(f"{where}: cfg layer {i} must be [from, repeats, module, args], got {layer!r:.80}")
    src, repeats, module, args = layer
    sources = src if isinstance(src, list) else [src]
    if not sources or not all(isinstance(s, int) and not isinstance(s, bool) and -MAX_LAYERS <= s < i
                              for s in sources):
        raise ValueError(f"{where}: cfg layer {i} reads from {src!r:.60}, not earlier layers")
    _int(repeats, where, f"layer {i} repeats", MAX_REPEATS)
    if not isinstance(module, str) or module in REFUSED_LAYERS or _layer_class(module) is None:
        raise ValueError(f"{where}: cfg layer {i} names {module!r:.60}, which is not a layer class of "
                         "ultralytics.nn.modules, torch.nn or torchvision.ops (or one that downloads weights)")
    if not isinstance(args, list):
        raise ValueError(f"{where}: cfg layer {i} arguments must be a list")
    _check_args(args, where, i)


def _check_args(values: list, where: str, i: int) -> None:
    for v in values:
        if isinstance(v, list):
            _check_args(v, where, i)
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        elif isinstance(v, (int, float)):
            if not math.isfinite(v) or abs(v) > MAX_INT_ARG:
                raise ValueError(f"{where}: cfg layer {i} argument {v!r} is beyond {MAX_INT_ARG}")
        else:
            raise ValueError(f"{where}: cfg layer {i} argument {v!r:.40} is not a number, string or list")


def _layer_class(name: str):
    import torchvision

    from ultralytics.nn import tasks

    if name.startswith("nn."):
        obj = getattr(nn, name[3:], None)
    elif name.startswith("torchvision.ops."):
        obj = getattr(torchvision.ops, name[len("torchvision.ops."):], None)
    else:
        obj = vars(tasks).get(name)
        if obj is not None and not getattr(obj, "__module__", "").startswith("ultralytics.nn.modules"):
            return None  # tasks.py also imports loaders and whole models; only layers may be named
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def _list(value, where: str, key: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{where}: cfg {key} must be a list of layers")
    return value


def _int(value, where: str, key: str, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise ValueError(f"{where}: cfg {key} must be an integer in 1..{hi}, got {value!r:.40}")
    return value


def _multiple(value, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_MULTIPLE:
        raise ValueError(f"{where}: cfg {key} must be a number in (0, {MAX_MULTIPLE}], got {value!r:.40}")
    return float(value)
