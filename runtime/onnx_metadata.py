"""`compress.*` ONNX metadata properties (docs/ARTIFACTS.md), read as data from a file someone may have
edited: each value bounded, JSON values strictly parsed, the keys the runtime relies on type-checked."""

from __future__ import annotations

import math

from compress.runtime.errors import ArtifactError, InputFileError
from compress.runtime.strict_json import parse_json

PREFIX = "compress."
# The longest value we write is the class list: 1,000 ImageNet names take about 20 KB.
MAX_VALUE_BYTES = 1024**2
MAX_CLASSES = 1_000_000
# The bounds compress.exporting.metadata writes within.
MAX_CHANNELS = 64
MAX_SIDE = 1 << 14


def decode_metadata(props: dict[str, str], source: str = "ONNX file") -> dict:
    """`compress.*` properties → short keys, JSON lists and objects parsed; other tools' properties (an
    ultralytics export's Python-literal `names`, say) are kept as the strings they are."""
    out = {}
    for key, value in props.items():
        if not key.startswith(PREFIX):
            out[key] = value
            continue
        short = key[len(PREFIX):]
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                value = parse_json(value, f"{source}: metadata {key}", max_bytes=MAX_VALUE_BYTES, max_depth=8)
            except InputFileError as exc:
                raise ArtifactError(str(exc)) from None
        out[short] = value
    check_metadata(out, source)
    return out


def check_metadata(meta: dict, source: str) -> None:
    """The keys that decide preprocessing and accuracy must have the types the runtime computes with."""
    def bad(key, problem):
        raise ArtifactError(f"{source}: metadata compress.{key} {problem}, got {str(meta[key])[:60]!r}")

    if "classes" in meta:
        classes = meta["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            bad("classes", "must be a JSON list of class names")
        if not 0 < len(classes) <= MAX_CLASSES:
            bad("classes", f"must name 1 to {MAX_CLASSES:,} classes")
        if len(set(classes)) != len(classes):
            bad("classes", "names a class twice")
    channels = None
    if "input_size" in meta:
        v = meta["input_size"]
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(d, int) and not isinstance(d, bool)
                                                            and d > 0 for d in v)
                and v[0] <= MAX_CHANNELS and max(v[1:]) <= MAX_SIDE):
            bad("input_size", f"must be [C, H, W] positive integers (C <= {MAX_CHANNELS}, H, W <= {MAX_SIDE})")
        channels = v[0]
    for key in ("mean", "std"):
        if key in meta:
            v = meta[key]
            if not (isinstance(v, list) and v and all(_finite_number(x) for x in v)) or (
                    key == "std" and any(x <= 0 for x in v)):
                bad(key, "must be a JSON list of finite numbers" + (" above 0" if key == "std" else ""))
            if channels is not None and len(v) != channels:
                bad(key, f"has {len(v)} values for {channels} input channels")


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
