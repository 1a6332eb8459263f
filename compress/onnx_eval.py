"""Accuracy of an ONNX file measured in ONNX Runtime, preprocessing from the file's own metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import ImageSet
from compress.errors import CompressError


def evaluate_onnx(path: str | Path, data: ImageSet, batch_size: int = 250) -> dict:
    from runtime.accuracy import onnx_accuracy

    path = Path(path)
    if not path.is_file():
        raise CompressError(f"ONNX file not found: {path}")
    from runtime.errors import RuntimeBenchError

    try:
        return onnx_accuracy(path, data.eval_images().numpy(), data.labels.numpy().astype(np.int64), batch_size=batch_size)
    except RuntimeBenchError as exc:  # an ONNX file ONNX Runtime cannot load
        raise CompressError(str(exc)) from None
