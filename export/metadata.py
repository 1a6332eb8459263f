"""ONNX metadata properties (docs/ARTIFACTS.md): `compress.*` keys, string values, lists as JSON."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import onnx

PREFIX = "compress."
# `classes` is optional: a detector may have none, or name them by index ({"0": "person", ...}).
REQUIRED = ("mean", "std", "input_size", "arch", "precision", "source_sha256", "toolkit_version")
JSON_KEYS = frozenset({"classes", "mean", "std", "input_size"})
PRECISIONS = ("fp32", "fp16", "int8")
MAX_SIDE = 1 << 14
MAX_CHANNELS = 64


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_metadata(metadata: dict[str, Any], where: str = "ONNX metadata") -> dict[str, Any]:
    """The metadata with short keys, checked for the documented keys, types and value shapes.

    Values are refused, never cast: an input size of "32" or 32.0, a NaN mean, duplicate class names.
    """
    meta = {_short(k): v for k, v in metadata.items()}
    missing = [k for k in REQUIRED if meta.get(k) in (None, "")]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(PREFIX + k for k in missing)}")
    if meta["precision"] not in PRECISIONS:
        raise ValueError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {meta['precision']!r}")
    size = meta["input_size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 3 or not all(_is_int(s) and s > 0 for s in size)
            or size[0] > MAX_CHANNELS or max(size[1:]) > MAX_SIDE):
        raise ValueError(f"{where}: input_size must be [C, H, W] positive integers (C <= {MAX_CHANNELS}, "
                         f"H, W <= {MAX_SIDE}), got {meta['input_size']!r}")
    for key in ("mean", "std"):
        values = meta[key]
        if not isinstance(values, (list, tuple)) or not all(_is_number(v) for v in values):
            raise ValueError(f"{where}: {key} must be a list of finite numbers, got {values!r}")
        if len(values) != size[0]:
            raise ValueError(f"{where}: {key} has {len(values)} values for {size[0]} input channels")
    if any(float(s) <= 0 for s in meta["std"]):
        raise ValueError(f"{where}: std values must be positive")
    if meta.get("classes") is not None:
        meta["classes"] = _checked_classes(meta["classes"], where)
    else:
        meta.pop("classes", None)
    for key in ("arch", "toolkit_version", "source_sha256"):
        if not isinstance(meta[key], str):
            raise ValueError(f"{where}: {key} must be a string, got {meta[key]!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", meta["source_sha256"]):
        raise ValueError(f"{where}: source_sha256 must be 64 hex digits, got {meta['source_sha256']!r:.80}")
    return meta


def _checked_classes(classes, where: str):
    """A non-empty list of distinct names, or a non-empty {index: name} mapping (keys as strings)."""
    if isinstance(classes, dict):
        if not classes or not all(isinstance(v, str) for v in classes.values()):
            raise ValueError(f"{where}: classes must map indices to names, got {classes!r:.80}")
        out = {}
        for key, name in classes.items():
            text = str(key)
            if isinstance(key, bool) or not text.isdigit() or len(text) > 9 or text in out:
                raise ValueError(f"{where}: class index {key!r:.20} must be a distinct non-negative integer")
            out[text] = name
        return out
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{where}: classes must be a non-empty list of strings, got {classes!r:.80}")
    if len(set(classes)) != len(classes):
        seen: set[str] = set()
        raise ValueError(f"{where}: class {next(c for c in classes if c in seen or seen.add(c))!r} is listed twice")
    return classes


def class_names(meta: dict[str, Any]) -> list[str] | None:
    """The class names in index order, or None when the metadata names none (or names them sparsely)."""
    classes = meta.get("classes")
    if isinstance(classes, dict):
        if sorted(int(k) for k in classes) != list(range(len(classes))):
            return None
        return [classes[str(i)] for i in range(len(classes))]
    return list(classes) if classes else None


def encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def set_metadata(model: onnx.ModelProto, metadata: dict[str, Any]) -> onnx.ModelProto:
    """Write (or overwrite) metadata properties in place; short keys get the `compress.` prefix."""
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in metadata.items():
        props[_long(key)] = encode(value)
    del model.metadata_props[:]
    for key in sorted(props):
        model.metadata_props.add(key=key, value=props[key])
    return model


def metadata_of(model: onnx.ModelProto) -> dict[str, Any]:
    """Decoded metadata: `compress.` keys lose their prefix; JSON lists and objects are parsed."""
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        key = _short(prop.key)
        if key in out:
            raise ValueError(f"ONNX metadata {prop.key} appears twice")
        out[key] = _decode(key, prop.value, prop.key)
    return out


def read_metadata(onnx_path: str | Path) -> dict[str, Any]:
    """Metadata of an ONNX file without loading its weights."""
    from compress.exporting.onnx_file import load_onnx

    return metadata_of(load_onnx(onnx_path, check=False, external_data=False))


def checked_metadata(onnx_path: str | Path) -> dict[str, Any]:
    """Metadata of a toolkit ONNX file, validated; one-line ValueError naming the file otherwise."""
    try:
        return validate_metadata(read_metadata(onnx_path), f"{onnx_path}: metadata")
    except ValueError as exc:
        text = str(exc)
        raise ValueError(text if str(onnx_path) in text else f"{onnx_path}: {text}") from None


def _decode(key: str, value: str, name: str) -> Any:
    """A metadata value, JSON parsed strictly and bounded (size, depth, duplicate keys, NaN): a stranger's
    file could nest `compress.classes` 100k deep. A value of another key that fails to parse stays a string."""
    from compress.runtime.errors import InputFileError
    from compress.runtime.strict_json import parse_json

    if key in JSON_KEYS or value[:1] in ("[", "{"):
        try:
            return parse_json(value, f"ONNX metadata {name}")
        except InputFileError as exc:
            if key in JSON_KEYS:
                raise ValueError(str(exc)[:300]) from None
    return value


def _short(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


def _long(key: str) -> str:
    return key if key.startswith(PREFIX) or "." in key else PREFIX + key
