"""FP16 ONNX with float32 inputs and outputs, made by onnxconverter-common."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from compress.exporting._files import sha256_file
from compress.exporting.errors import ExportError
from compress.exporting.metadata import metadata_of, set_metadata
from compress.exporting.onnx_file import load_onnx, save_onnx

FP16_MAX = 65504.0  # the largest finite float16


def precision_of(model: onnx.ModelProto) -> str:
    """fp32, fp16 or int8, from the metadata when present, else from the graph itself."""
    declared = metadata_of(model).get("precision")
    if declared in ("fp32", "fp16", "int8"):
        return declared
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def convert_fp16(onnx_in: str | Path, onnx_out: str | Path) -> Path:
    """Write an FP16 copy of an FP32 ONNX file; inputs and outputs stay float32 (Cast at the edges).

    The metadata is carried over with `precision` fp16, `source_sha256` the FP32 file's hash and
    `weights_sha256` the FP32 file's source_sha256 (the weights'), by which a report matches a model.json.
    """
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    model = load_onnx(onnx_in)
    try:
        precision = precision_of(model)
    except ValueError as exc:  # its metadata is not what this toolkit writes (e.g. nested too deep)
        raise ExportError(f"{onnx_in}: {exc}") from None
    if precision != "fp32":
        raise ExportError(f"{onnx_in} is already {precision}; FP16 conversion needs an FP32 model")
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # It warns once per weight whose magnitude is below FP16's range; those become ±1e-7 or 0,
        # which the parity check then judges as a whole.
        warnings.simplefilter("ignore")
        # The converter's default clamps every value above 1e4 to 1e4, though FP16 holds up to 65504
        # (a BN's running variance can pass 1e4): clamp only where FP16 must.
        half = float16.convert_float_to_float16(model, keep_io_types=True, max_finite_val=FP16_MAX)
    carried = {"weights_sha256": metadata_of(model)["source_sha256"]} if metadata_of(model).get("source_sha256") else {}
    set_metadata(half, {"precision": "fp16", "source_sha256": sha256_file(onnx_in), **carried})
    try:
        onnx.checker.check_model(half)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"FP16 graph fails the ONNX checker: {str(exc).strip().splitlines()[0][:300]}") from exc
    return save_onnx(half, onnx_out)
