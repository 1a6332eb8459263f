"""What a benchmark report says about an artifact besides its timings: its size on disk, parameter and MAC
counts, and what its model directory's model.json records (per-layer widths, the accuracy measured
when it was made).

The runtime reads model.json and engine sidecars itself (bounded, strict JSON), and treats every value
as untrusted: a value of the wrong type becomes a warning, never a crash or a number it did not say.
"""

from __future__ import annotations

import math
from pathlib import Path

from compress.runtime.engine_sidecar import read_sidecar, sidecar_path
from compress.runtime.errors import RuntimeBenchError
from compress.runtime.input_files import MAX_ONNX_BYTES, check_regular_file
from compress.runtime.strict_json import read_json


def file_info(path: Path, kind: str) -> dict:
    """Size on disk: the file itself, or a model directory's weights (model.safetensors)."""
    if path.is_dir():
        weights = path / "model.safetensors"
        total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return {"size_bytes": weights.stat().st_size if weights.is_file() else total,
                "what": "model.safetensors" if weights.is_file() else "directory total", "directory_bytes": total}
    return {"size_bytes": path.stat().st_size, "what": path.name}


def engine_onnx_path(engine: Path) -> Path | None:
    """The ONNX file an engine was built from: the sidecar's `onnx_path` (recorded as the build was given it,
    so tried beside the engine first, then from here) or its name beside the engine, whichever file has the
    sidecar's `onnx_sha256`; None when none has. A sidecar is a stranger's file too: a path it names is used
    only for the bytes the engine was built from, never for another model's counts, and only when it is a
    regular file within the ONNX bound."""
    if not sidecar_path(engine).exists():
        return None
    info = read_sidecar(engine)
    recorded, digest = info.get("onnx_path"), info.get("onnx_sha256")
    if not isinstance(recorded, str) or not recorded:
        return None
    candidates = [engine.parent / recorded, Path(recorded), engine.parent / Path(recorded).name]
    for candidate in dict.fromkeys(candidates):
        try:  # the path is the sidecar's: only a regular file an ONNX file could be is read, never /proc/kcore
            check_regular_file(candidate, "ONNX file", MAX_ONNX_BYTES)
        except RuntimeBenchError:
            continue
        if _digest(candidate) == digest:
            return candidate
    return None


def _digest(path: Path) -> str:
    """sha256 of a candidate, once per file version: a report reads an engine's ONNX file for its counts and
    again for its model.json, and it may be large."""
    from compress.runtime.file_hash import sha256_file

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        if len(_DIGESTS) >= 16:
            _DIGESTS.clear()
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


_DIGESTS: dict[tuple, str] = {}


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def model_counts(path: Path, kind: str, warnings: list, one_line) -> dict | None:
    """Parameters, MACs and FLOPs of one image: from the ONNX graph, or the model directory's model.json."""
    from compress.runtime.onnx_flops import count_onnx

    try:
        if kind == "onnx":
            return {**count_onnx(path), "source": "ONNX graph"}
        if kind == "engine":
            onnx_path = engine_onnx_path(path)
            if onnx_path is not None and onnx_path.is_file():
                return {**count_onnx(onnx_path), "source": f"ONNX graph the engine was built from ({onnx_path})"}
            warnings.append(f"{path.name}: parameter/MAC counts unknown (no ONNX file with the sidecar's "
                            "onnx_sha256 is where its onnx_path says, or beside the engine)")
            return None
        if kind == "model_dir":
            meta = read_json(path / "model.json", "model.json")
            meta = meta if isinstance(meta, dict) else {}
            return {"params": _count(meta.get("params")), "macs": _count(meta.get("macs")),
                    "flops": _count(meta.get("flops")), "source": "model.json"}
    except Exception as exc:  # noqa: BLE001 - counts are informational; the measurement goes on
        warnings.append(f"{path.name}: cannot count parameters/MACs: {one_line(exc)}")
    return None


def find_model_json(path: Path, kind: str, model_dir: str | Path | None = None) -> Path | None:
    """model.json describing the artifact: given explicitly, the directory itself, or beside the file."""
    candidates = []
    if model_dir is not None:
        candidates.append(Path(model_dir) / "model.json")
    if kind == "model_dir":
        candidates.append(path / "model.json")
    elif kind == "engine":
        try:
            onnx_path = engine_onnx_path(path)
        except RuntimeBenchError:
            onnx_path = None
        if onnx_path is not None:
            candidates.append(onnx_path.parent / "model.json")
        candidates.append(path.parent / "model.json")
    else:
        candidates.append(path.parent / "model.json")
    return next((c for c in candidates if c.is_file()), None)


def attach_model_json(v: dict, path: Path, kind: str, model_dir, one_line) -> None:
    """Fill the report row's model_json, reference_accuracy and widths from the artifact's model.json."""
    found = find_model_json(path, kind, model_dir)
    if found is None:
        if model_dir is not None:
            v["warnings"].append(f"--model-dir {model_dir} has no model.json")
        return
    try:
        meta = read_json(found, "model.json")
        if not isinstance(meta, dict):
            raise ValueError(f"{found} is not a JSON object")
    except (OSError, ValueError, RuntimeBenchError) as exc:
        v["warnings"].append(f"{found}: unreadable ({one_line(exc)})")
        return
    matched, why = _matched(path, kind, found)
    if why is not None and matched and model_dir is None:
        # Found beside the file and not matched: any model.json can sit there, so its figures are left out.
        matched, why = False, f"{why}; its widths and accuracy are not reported (--model-dir names it to report them)"
    if why is not None:
        v["warnings"].append(why)
    if not matched:
        return
    v["model_json"] = str(found)
    accuracy = meta.get("accuracy")
    if accuracy is not None and not (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
                                     and math.isfinite(accuracy) and 0 <= accuracy <= 1):
        v["warnings"].append(f"{found}: accuracy {str(accuracy)[:40]!r} is not a fraction between 0 and 1; ignored")
        accuracy = None
    v["reference_accuracy"] = accuracy
    v["widths"] = _widths(meta.get("widths"), found, v["warnings"])


def _matched(path: Path, kind: str, found: Path) -> tuple[bool, str | None]:
    from compress.runtime.model_json_match import mismatch

    try:
        onnx_file = path if kind == "onnx" else engine_onnx_path(path) if kind == "engine" else None
    except RuntimeBenchError:
        onnx_file = None
    return mismatch(path, kind, found, onnx_file)


def _widths(raw, found: Path, warnings: list) -> dict | None:
    if not isinstance(raw, dict):
        return None
    widths = {}
    for layer, w in raw.items():
        if not isinstance(w, dict):
            continue
        key = {"Conv2d": "out_channels", "Linear": "out_features"}.get(w.get("type"))
        if key is None:
            continue
        value = _count(w.get(key))
        if value is None:
            warnings.append(f"{found}: widths of {layer} has {key} {str(w.get(key))[:40]!r}; not a width, ignored")
            continue
        widths[layer] = value
    return widths or None
