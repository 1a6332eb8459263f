"""Fixtures for the runtime tests: tiny hand-built ONNX files and one exported VGG-19 per session."""

import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from onnx_builders import CLASSES, MEAN, STD, tiny_cnn  # noqa: E402


@pytest.fixture
def tiny_onnx(tmp_path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn(), str(path))
    return path


@pytest.fixture(scope="session")
def vgg19_onnx(tmp_path_factory) -> Path:
    """VGG-19 (CIFAR, width 1.0) exported by the toolkit's exporter, BatchNorm kept in the graph."""
    from compress.exporting.onnx_export import export_onnx
    from compress.models import create_model

    path = tmp_path_factory.mktemp("vgg19") / "vgg19.onnx"
    meta = {"classes": CLASSES, "mean": MEAN, "std": STD, "input_size": [3, 32, 32], "arch": "vgg19",
            "precision": "fp32", "source_sha256": "0" * 64, "toolkit_version": "0.1.0"}
    return export_onnx(create_model("vgg19", num_classes=10), path, input_size=[3, 32, 32], metadata=meta)
