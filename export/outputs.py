"""What a network returns, as a flat list of named tensors: one ONNX output each.

A forward may return a tensor, a tuple or list, or a dict, nested (ultralytics' Detect returns, in eval
mode, a tensor and a dict holding a list of feature maps). Names follow the structure: a single tensor is
`logits` (the classifier convention of docs/ARTIFACTS.md); the items of a top-level tuple or list are
`output0`, `output1`, ...; a dict's items are named by their keys; nested items join their parent's name
with a dot (`output1.feats.0`). A top-level key of digits alone (torchvision's feature extractors return
`{"0": ..., "1": ..., "pool": ...}`) is named `output.0`: TorchScript refuses a value named by a number.
Works on torch tensors and numpy arrays alike (no torch import here).
"""

from __future__ import annotations

import re
from typing import Any

SINGLE_NAME = "logits"
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$")


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (dict, list, tuple))


def flatten_outputs(out: Any, single_name: str = SINGLE_NAME) -> list[tuple[str, Any]]:
    """[(name, tensor), ...] in the order the structure holds them (dicts in insertion order)."""
    if _is_tensor(out):
        return [(single_name, out)]
    flat: list[tuple[str, Any]] = []
    _walk(out, "", flat)
    if not flat:
        raise ValueError("the model returns no tensor")
    names = [n for n, _ in flat]
    seen: set[str] = set()
    dup = next((n for n in names if n in seen or seen.add(n)), None)
    if dup is not None:
        raise ValueError(f"two of the model's outputs would both be named {dup!r}")
    return flat


def _walk(value: Any, prefix: str, flat: list) -> None:
    if _is_tensor(value):
        flat.append((prefix, value))
    elif isinstance(value, dict):
        for key, item in value.items():
            key = str(key)
            if not _KEY.match(key):
                raise ValueError(f"output key {key!r:.60} cannot name an ONNX output (letters, digits, _.:/-)")
            _walk(item, f"{prefix}.{key}" if prefix else (f"output.{key}" if key.isdigit() else key), flat)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk(item, f"{prefix}.{i}" if prefix else f"output{i}", flat)
    else:
        where = prefix or "the model's output"
        raise ValueError(f"{where} is a {type(value).__name__}, not a tensor, tuple, list or dict of tensors")


def output_names(out: Any) -> list[str]:
    return [name for name, _ in flatten_outputs(out)]
