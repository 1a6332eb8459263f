"""Model directories: ``model.safetensors`` + ``model.json``, rebuilt without unpickling anything.

A pruned network is rebuilt by constructing its unpruned architecture, resizing every Conv2d,
BatchNorm2d and Linear to the widths recorded in ``model.json``, and loading the weights strictly.
See docs/ARTIFACTS.md.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress import __version__
from compress.atomic import atomic_path, write_json
from compress.errors import CompressError
from compress.measure import count_params_macs, layer_widths

FORMAT = "compress.model/1"
WEIGHTS = "model.safetensors"
META = "model.json"
REQUIRED_META = ("arch", "arch_kwargs", "classes", "input_size", "normalization")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def save_model_dir(model: nn.Module, out_dir: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write weights and metadata; ``model.json`` goes last, so its presence marks a complete directory."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {', '.join(missing)}")
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    params, macs = count_params_macs(model, tuple(meta["input_size"]))
    full = {
        "format": FORMAT,
        **{k: v for k, v in meta.items() if k not in ("widths", "params", "macs", "flops")},
        "widths": layer_widths(model),
        "params": params,
        "macs": macs,
        "flops": 2 * macs,
        "weights_sha256": file_sha256(out_dir / WEIGHTS),
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "toolkit_version": __version__,
    }
    full.setdefault("accuracy", None)
    write_json(out_dir / META, full)
    return full


def read_meta(path: str | Path) -> dict[str, Any]:
    """model.json of a model directory, validated completely (types, counts, sizes before allocation)."""
    from compress.validate import validate_model_meta

    path = Path(path)
    if not path.exists():
        raise CompressError(f"model directory not found: {path}")
    if not (path / META).is_file():
        raise CompressError(f"{path} is not a model directory (no {META}; an interrupted run leaves none)")
    try:
        meta = json.loads((path / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"{path / META} is not valid JSON: {exc}") from None
    return validate_model_meta(meta, str(path / META))


def build_model(meta: dict[str, Any]) -> nn.Module:
    """The module described by ``meta`` (architecture + recorded widths), with untrained weights."""
    model = construct(meta["arch"], meta["arch_kwargs"])
    apply_widths(model, meta.get("widths") or {})
    return model


def construct(arch: str, arch_kwargs: dict) -> nn.Module:
    """The unpruned architecture from its recorded name and constructor arguments, exactly: a user's
    class gets only the recorded arguments."""
    from compress.models import create_model
    from compress.models.user import is_import_path

    if not isinstance(arch_kwargs, dict):
        raise CompressError(f"arch_kwargs must be a JSON object, got {type(arch_kwargs).__name__}")
    kwargs = dict(arch_kwargs)
    if is_import_path(arch):
        try:
            return create_model(arch, **{"num_classes": None, **kwargs})
        except ValueError as exc:
            raise CompressError(str(exc)) from None
    try:
        return create_model(arch, **kwargs)
    except (ValueError, TypeError) as exc:
        raise CompressError(str(exc)) from None


def arch_name(model: nn.Module) -> str:
    """``package.module:Class`` for a model whose class can be imported again."""
    cls = type(model)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise CompressError(f"{cls.__qualname__} is defined in a script or a function; move it into an importable "
                            "module so the saved model can be rebuilt, or pass arch='package.module:Class'")
    return f"{cls.__module__}:{cls.__qualname__}"


def save_model(model: nn.Module, path: str | Path, *, classes: list[str], input_size, mean, std,
               arch: str | None = None, arch_kwargs: dict | None = None, accuracy: float | None = None,
               **extra) -> dict[str, Any]:
    """Save any model (pruned or not) as a model directory that ``load_model`` and every command read.

    `arch` is a registry name or ``package.module:Class`` (default: the model's own class) and
    `arch_kwargs` the JSON constructor arguments that rebuild the unpruned network; the pruned widths
    are read off the model. The directory is checked to rebuild before ``model.json`` is written.
    """
    if isinstance(input_size, int):
        input_size = [3, input_size, input_size]
    input_size = [int(v) for v in input_size]
    if len(input_size) != 3 or min(input_size) < 1:
        raise CompressError(f"input_size must be N or (C, H, W), got {input_size}")
    from compress.models import resolved_kwargs

    arch = arch or arch_name(model)
    try:
        arch_kwargs = resolved_kwargs(arch, dict(arch_kwargs or {}))
    except ValueError as exc:
        raise CompressError(str(exc)) from None
    try:
        json.dumps(arch_kwargs)
    except TypeError as exc:
        raise CompressError(f"arch_kwargs must be JSON-serializable: {exc}") from None
    meta = {"arch": arch, "arch_kwargs": arch_kwargs, "classes": [str(c) for c in classes],
            "input_size": input_size, "normalization": {"mean": [float(v) for v in mean],
                                                        "std": [float(v) for v in std]},
            "accuracy": accuracy, **extra}
    rebuilt = build_model({**meta, "widths": layer_widths(model)})
    _check_same_structure(rebuilt, model, arch)
    return save_model_dir(model, path, meta)


def _check_same_structure(rebuilt: nn.Module, model: nn.Module, arch: str) -> None:
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    for key in list(ours) + [k for k in theirs if k not in ours]:
        if ours.get(key) != theirs.get(key):
            raise CompressError(f"{arch} with these arch_kwargs does not rebuild the model: tensor {key} is "
                                f"{theirs.get(key, 'absent')} there and {ours.get(key, 'absent')} in the model")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model saved in a model directory, in eval mode, and its metadata."""
    return load_model_dir(path, device)


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model in eval mode from its directory alone."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    model = build_model(meta)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise CompressError(f"{path} has {META} but no {WEIGHTS}")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CompressError(f"{weights} is corrupt: {exc}") from None
    from compress.validate import check_state

    check_state(state, model.state_dict(), str(weights))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0] if first else "")
        raise CompressError(f"{weights} does not fit {meta['arch']} with the widths in {META}: {detail}") from None
    return model.to(device).eval(), meta


def apply_widths(model: nn.Module, widths: dict[str, dict]) -> None:
    """Replace each recorded layer with one of the recorded width, keeping its other settings."""
    from compress.channel_select import WIDTH_TYPE as SELECT_TYPE

    modules = dict(model.named_modules())
    for name, spec in widths.items():
        old = modules.get(name)
        # A plain BN of the unpruned architecture becomes a selecting one where slimming put a selection.
        selects = spec.get("type") == SELECT_TYPE and isinstance(old, nn.BatchNorm2d)
        if old is None or (type(old).__name__ != spec.get("type") and not selects):
            raise CompressError(f"widths name a layer {name!r} ({spec.get('type')}) that "
                                f"{type(model).__name__} does not have")
        new = _resized(old, spec)
        if new is not old:
            _set_submodule(model, name, new)


def _resized(m: nn.Module, spec: dict) -> nn.Module:
    from compress.channel_select import WIDTH_TYPE, from_width_spec

    if spec.get("type") == WIDTH_TYPE:
        return from_width_spec(m, spec)
    if isinstance(m, nn.Conv2d):
        bias = spec.get("bias", m.bias is not None)
        if (m.in_channels, m.out_channels, m.groups, m.bias is not None) == (
                spec["in_channels"], spec["out_channels"], spec["groups"], bias):
            return m
        return nn.Conv2d(spec["in_channels"], spec["out_channels"], m.kernel_size, m.stride, m.padding,
                         m.dilation, spec["groups"], bias, m.padding_mode)
    if isinstance(m, nn.BatchNorm2d):
        if m.num_features == spec["num_features"]:
            return m
        return nn.BatchNorm2d(spec["num_features"], m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.Linear):
        bias = spec.get("bias", m.bias is not None)
        if (m.in_features, m.out_features, m.bias is not None) == (spec["in_features"], spec["out_features"], bias):
            return m
        return nn.Linear(spec["in_features"], spec["out_features"], bias)
    raise CompressError(f"cannot resize a {type(m).__name__}")


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def derived_meta(parent_meta: dict[str, Any], parent_dir: str | Path | None, **updates) -> dict[str, Any]:
    """Metadata for a model made from another: same arch and data description, new numbers."""
    keep = ("arch", "arch_kwargs", "classes", "input_size", "normalization", "data")
    meta = {k: parent_meta[k] for k in keep if k in parent_meta}
    if parent_dir is not None:
        parent_dir = Path(parent_dir)
        meta["parent"] = {"path": str(parent_dir), "sha256": parent_meta.get("weights_sha256"),
                          "params": parent_meta.get("params"), "macs": parent_meta.get("macs"),
                          "accuracy": parent_meta.get("accuracy")}
        # The unpruned ancestor stays reachable so reports can state reductions against it.
        meta["origin"] = parent_meta.get("origin") or meta["parent"]
    meta.update(updates)
    return meta
