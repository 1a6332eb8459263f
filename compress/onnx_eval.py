"""Accuracy of an ONNX file measured in ONNX Runtime, preprocessing from the file's own metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data import ImageSet
from compress.errors import CompressError
from compress.labels import check_class_names


def evaluate_onnx(path: str | Path, data: ImageSet, batch_size: int = 250) -> dict:
    """{'accuracy', 'correct', 'images'} of the ONNX file on `data`, after checking that the file's metadata
    is valid and agrees with the data (classes, image size). Accuracy is measured for classifiers only: a
    file with other outputs than logits (or probabilities and logits), or without class names, is refused."""
    from compress.exporting.metadata import class_names
    from compress.runtime.accuracy import onnx_accuracy
    from compress.runtime.errors import RuntimeBenchError

    path = Path(path)
    proto, meta = _loaded(path)
    outputs = [o.name for o in proto.graph.output]
    classes = class_names(meta)
    if len(outputs) not in (1, 2) or classes is None:  # two: probabilities and logits, checked when run
        why = f"it has {len(outputs)} outputs" if len(outputs) > 2 else "its metadata names no classes"
        raise CompressError(f"{path} is not a classifier ({why}); accuracy is measured for classifiers only")
    if len(data) == 0:
        raise CompressError("the test split holds no images")
    check_class_names(classes, data.classes, path, "the file")
    if list(data.input_size) != list(meta["input_size"]):
        raise CompressError(f"the data's images are {list(data.input_size)}, {path} takes {meta['input_size']}")
    try:
        return onnx_accuracy(path, data.eval_images().numpy(), data.labels.numpy().astype(np.int64), batch_size=batch_size)
    except RuntimeBenchError as exc:  # an ONNX file ONNX Runtime cannot load
        raise CompressError(str(exc)) from None
    except ValueError as exc:  # the graph disagrees with its own metadata
        raise CompressError(f"{path}: {_first(exc)}") from None


def onnx_metadata(path: str | Path) -> dict:
    """The file's checked `compress.*` metadata (input size, classes, normalization): what sizes the data."""
    return _loaded(Path(path))[1]


def _loaded(path: Path):
    from compress.exporting.errors import ExportError
    from compress.exporting.metadata import checked_metadata
    from compress.exporting.onnx_file import load_onnx

    if not path.exists():
        raise CompressError(f"ONNX file not found: {path}")
    try:
        return load_onnx(path), checked_metadata(path)
    except ExportError as exc:
        raise CompressError(str(exc)) from None
    except ValueError as exc:
        raise CompressError(_first(exc)) from None


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
