"""Whether a model.json describes the artifact a report row measures.

A report takes an artifact's per-layer widths and its recorded accuracy from a model.json: given with
`--model-dir`, or found beside the file. Any model.json can sit there, so before its figures are reported
for the artifact, the weights it sits beside are matched to the artifact: an exported ONNX file records
the sha256 of the model.safetensors it came from (`compress.source_sha256`), and so does an INT8 file
quantized from it; an FP16 file carries it over as `compress.weights_sha256` (its source_sha256 is the FP32
file's). A model.json that cannot be matched (no hash recorded, no weights beside it) is reported only when
the user names it with `--model-dir`.
"""

from __future__ import annotations

from pathlib import Path

from compress.runtime.file_hash import sha256_file
from compress.runtime.onnx_metadata import PREFIX

WEIGHTS = "model.safetensors"


def mismatch(path: Path, kind: str, found: Path, onnx_file: Path | None) -> tuple[bool, str | None]:
    """(matched, why not): matched False means the model.json describes other weights and must not be
    used; matched True with a reason means it could not be checked (the row says so)."""
    weights = found.parent / WEIGHTS
    if kind == "model_dir":
        if found.parent.resolve() == path.resolve():
            return True, None
        source = sha256_file(path / WEIGHTS) if (path / WEIGHTS).is_file() else None
        what = f"{path}/{WEIGHTS}"
    else:
        if onnx_file is None or not onnx_file.is_file():
            return True, f"{found} not matched to {path.name}: the ONNX file it was built from is not here"
        props = _props(onnx_file)
        # An FP16 file's source_sha256 is the FP32 file's hash; the weights' hash it carries over is its own key.
        key = "weights_sha256" if props.get(PREFIX + "precision") == "fp16" else "source_sha256"
        source = props.get(PREFIX + key)
        what = f"{onnx_file.name}'s {PREFIX}{key}"
    if source is None:
        return True, f"{found} not matched to {path.name}: {what} is not recorded"
    if not weights.is_file():
        return True, f"{found} not matched to {path.name}: no {WEIGHTS} beside it"
    if sha256_file(weights) != source:
        return False, (f"{found} describes other weights than {path.name} (the sha256 of its {WEIGHTS} is not "
                       f"{what}); its widths and accuracy are not reported")
    return True, None


def _props(onnx_file: Path) -> dict[str, str]:
    from compress.runtime.external_data import load_graph

    try:
        model = load_graph(onnx_file)
    except Exception:  # noqa: BLE001 - the measurement itself names a file it cannot read
        return {}
    return {p.key: p.value for p in model.metadata_props}
