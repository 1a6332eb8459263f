"""Loading and saving ONNX files with one-line errors for missing, corrupt or truncated input."""

from __future__ import annotations

from pathlib import Path

import onnx

from compress.exporting._files import atomic_write_bytes
from compress.exporting.errors import OnnxFileError
from compress.runtime.errors import InputFileError
from compress.runtime.external_data import check_external_data
from compress.runtime.input_files import MAX_ONNX_BYTES, check_regular_file

# Protobuf refuses single messages above 2 GiB; CNNs in this toolkit stay far below.
_PROTOBUF_LIMIT = 2**31 - 1


def load_onnx(path: str | Path, *, check: bool = True, external_data: bool = True) -> onnx.ModelProto:
    """Parse an ONNX file and (by default) run the ONNX checker on it.

    A truncated file either fails to parse or, when cut at a field boundary, loses the opset
    imports or the initializers its nodes read; the checker catches those cases.
    """
    path = Path(path)
    try:
        # A FIFO would block onnx.load forever, a device never ends: refused before it is opened.
        size = check_regular_file(path, "ONNX file", MAX_ONNX_BYTES)
    except InputFileError as exc:
        raise OnnxFileError(str(exc)) from None
    if size == 0:
        raise OnnxFileError(f"{path} is empty")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError or ValueError
        raise OnnxFileError(f"{path} is not a readable ONNX file (corrupt or truncated?): {_first_line(exc)}") from None
    if external_data:
        _load_external_data(model, path)
    if len(model.graph.node) == 0:
        raise OnnxFileError(f"{path} holds no graph nodes (corrupt or truncated?)")
    if check:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - ValidationError and friends
            raise OnnxFileError(f"{path} fails the ONNX checker (corrupt or truncated?): {_first_line(exc)}") from None
    return model


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """The external tensors of `model`, read into it once their total is bounded."""
    from onnx.external_data_helper import load_external_data_for_tensor

    try:
        tensors = check_external_data(model, path)
    except InputFileError as exc:
        raise OnnxFileError(str(exc)) from None
    for tensor in tensors:
        try:
            load_external_data_for_tensor(tensor, str(path.parent))
        except Exception as exc:  # noqa: BLE001 - onnx raises ValueError, OSError or its checker's errors
            raise OnnxFileError(f"{path}: cannot read the external data of tensor {tensor.name!r}: "
                                f"{_first_line(exc)}") from None


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    data = model.SerializeToString()
    if len(data) > _PROTOBUF_LIMIT:
        raise OnnxFileError(f"model is {len(data) / 2**30:.1f} GiB, beyond the 2 GiB a single ONNX file can hold")
    return atomic_write_bytes(path, data)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:300]
