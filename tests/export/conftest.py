"""Fixtures for the export tests."""

import pytest

from export_helpers import lively, metadata


@pytest.fixture(scope="session")
def vgg_onnx(tmp_path_factory):
    """A small exported VGG (model, path), shared by tests that only read it."""
    from compress.exporting.onnx_export import export_onnx
    from compress.models import create_model

    model = lively(create_model("vgg11", num_classes=10, width=0.125))
    path = tmp_path_factory.mktemp("vgg") / "vgg11.onnx"
    export_onnx(model, path, input_size=[3, 32, 32], metadata=metadata("vgg11"))
    return model, path
