"""Reading and checking `X.engine.json`, the sidecar beside every TensorRT engine: what built it, for
what GPU, from which ONNX file.

A TensorRT plan only runs on the TensorRT version and GPU model that built it, and fails in obscure
ways elsewhere; `check_sidecar` refuses early with a one-line reason instead. The runtime reads the
sidecar, so it lives here; `compress.exporting.engine_sidecar` writes it with these definitions. Pure
Python, so it runs (and is tested) without TensorRT.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from compress.runtime.errors import InputFileError, SidecarError
from compress.runtime.input_files import MAX_ENGINE_BYTES, check_regular_file
from compress.runtime.strict_json import read_json

FORMAT = "compress.engine/1"
REQUIRED = ("tensorrt_version", "gpu_name", "compute_capability", "precision", "profile", "onnx_sha256",
            "build_time_s", "engine_size")
# A sidecar is a few hundred bytes; metadata copied from the ONNX file (classes) can make it a few KB.
MAX_SIDECAR_BYTES = 1024**2


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def capability_str(cc) -> str:
    """'8.7' from '8.7', (8, 7) or [8, 7]."""
    if isinstance(cc, str):
        return cc.strip()
    major, minor = cc
    return f"{int(major)}.{int(minor)}"


def read_sidecar(engine_path: str | os.PathLike) -> dict[str, Any]:
    engine_path = Path(engine_path)
    path = sidecar_path(engine_path)
    if not path.exists():
        raise SidecarError(f"{engine_path} has no sidecar {path.name}; rebuild it with `compress export --trt` "
                           "so its TensorRT version and GPU are known")
    try:
        info = read_json(path, "engine sidecar", max_bytes=MAX_SIDECAR_BYTES)
    except InputFileError as exc:
        raise SidecarError(str(exc)) from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise SidecarError(f"{path} is not a {FORMAT} sidecar")
    missing = [k for k in REQUIRED if k not in info]
    if missing:
        raise SidecarError(f"{path} lacks {', '.join(missing)}")
    _validate(info, path)
    return info


def _validate(info: dict, path: Path) -> None:
    """Types and ranges of every required field: a sidecar value is refused, never cast."""
    def bad(field, problem):
        raise SidecarError(f"{path}: {field} {problem}, got {info.get(field)!r:.60}")

    size = info["engine_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        bad("engine_size", "must be a positive integer")
    for key in ("tensorrt_version", "gpu_name"):
        if not isinstance(info[key], str) or not info[key].strip():
            bad(key, "must be a non-empty string")
    cc = info["compute_capability"]
    if not isinstance(cc, str) or not re.fullmatch(r"\d+\.\d+", cc):
        bad("compute_capability", "must be 'major.minor'")
    if info["precision"] not in ("fp32", "fp16", "int8"):
        bad("precision", "must be fp32, fp16 or int8")
    if not isinstance(info["onnx_sha256"], str) or not re.fullmatch(r"[0-9a-f]{64}", info["onnx_sha256"]):
        bad("onnx_sha256", "must be 64 hex digits")
    t = info["build_time_s"]
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        bad("build_time_s", "must be a finite number of seconds")
    profile = info["profile"]
    shapes_ok = isinstance(profile, dict) and all(
        isinstance(profile.get(k), list) and profile[k] and all(isinstance(d, int) and not isinstance(d, bool)
                                                                 and d > 0 for d in profile[k])
        for k in ("min", "opt", "max"))
    if not shapes_ok or not len(profile["min"]) == len(profile["opt"]) == len(profile["max"]):
        bad("profile", "must hold min, opt and max shapes of positive integers")
    if "onnx_path" in info and not isinstance(info["onnx_path"], (str, type(None))):
        bad("onnx_path", "must be a path string")
    if "metadata" in info and not isinstance(info["metadata"], (dict, type(None))):
        bad("metadata", "must be an object")


def check_sidecar(engine_path: str | os.PathLike, trt_version: str, gpu_name: str, compute_capability) -> dict:
    """The sidecar, after checking it matches the running TensorRT and GPU and the engine file itself."""
    engine_path = Path(engine_path)
    if not engine_path.exists():
        raise SidecarError(f"engine not found: {engine_path}")
    try:
        size = check_regular_file(engine_path, "engine", MAX_ENGINE_BYTES)
    except InputFileError as exc:
        raise SidecarError(str(exc)) from None
    info = read_sidecar(engine_path)
    if int(info["engine_size"]) != size:
        raise SidecarError(f"{engine_path} is {size} bytes but its sidecar records {info['engine_size']}: "
                           "the engine was replaced or truncated; rebuild it")
    if str(info["tensorrt_version"]) != str(trt_version):
        raise SidecarError(f"{engine_path} was built with TensorRT {info['tensorrt_version']}, this is TensorRT "
                           f"{trt_version}; rebuild the engine here")
    cc = capability_str(compute_capability)
    if capability_str(info["compute_capability"]) != cc:
        raise SidecarError(f"{engine_path} was built for compute capability {info['compute_capability']} "
                           f"({info['gpu_name']}), this GPU is {cc} ({gpu_name}); rebuild the engine here")
    if str(info["gpu_name"]).strip() != str(gpu_name).strip():
        raise SidecarError(f"{engine_path} was built on {info['gpu_name']}, this GPU is {gpu_name}; "
                           "rebuild the engine here")
    return info
