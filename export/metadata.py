"""ONNX metadata properties (docs/ARTIFACTS.md): `compress.*` keys, string values, lists as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

PREFIX = "compress."
REQUIRED = ("classes", "mean", "std", "input_size", "arch", "precision", "source_sha256", "toolkit_version")
JSON_KEYS = frozenset({"classes", "mean", "std", "input_size"})
PRECISIONS = ("fp32", "fp16", "int8")


def validate_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata with short keys, checked for the documented keys and value shapes."""
    meta = {_short(k): v for k, v in metadata.items()}
    missing = [k for k in REQUIRED if meta.get(k) in (None, "")]
    if missing:
        raise ValueError(f"ONNX metadata lacks {', '.join(missing)}")
    if meta["precision"] not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {meta['precision']!r}")
    size = list(meta["input_size"])
    if len(size) != 3 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"input_size must be [C, H, W] positive integers, got {meta['input_size']!r}")
    for key in ("mean", "std"):
        if len(meta[key]) != size[0]:
            raise ValueError(f"{key} has {len(meta[key])} values for {size[0]} input channels")
    if any(float(s) <= 0 for s in meta["std"]):
        raise ValueError("std values must be positive")
    return meta


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
        out[key] = _decode(key, prop.value)
    return out


def read_metadata(onnx_path: str | Path) -> dict[str, Any]:
    """Metadata of an ONNX file without loading its weights."""
    from export.onnx_file import load_onnx

    return metadata_of(load_onnx(onnx_path, check=False, external_data=False))


def _decode(key: str, value: str) -> Any:
    if key in JSON_KEYS or value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            if key in JSON_KEYS:
                raise ValueError(f"ONNX metadata {PREFIX}{key} is not valid JSON: {value[:80]!r}") from None
    return value


def _short(key: str) -> str:
    return key[len(PREFIX):] if key.startswith(PREFIX) else key


def _long(key: str) -> str:
    return key if key.startswith(PREFIX) or "." in key else PREFIX + key
