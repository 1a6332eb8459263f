"""compress.exporting.float64_review: an FP32 parity failure that is only rounding passes on a second look in
float64; an export that computes something else, however slightly, still fails."""

import copy

import numpy as np
import onnx
import pytest
import torch
from export_helpers import images, lively, metadata
from onnx import numpy_helper

from compress.exporting.errors import ParityError
from compress.exporting.onnx_export import export_onnx
from compress.exporting.parity import check_parity
from compress.models import create_model


@pytest.fixture(scope="module")
def loud(tmp_path_factory):
    """A small VGG whose classifier is scaled so that its logits run to about 1e6, as an overfit head's or a
    pruned network's can: torch float32 and float64 then differ by far more than the default atol."""
    torch.manual_seed(0)
    model = lively(create_model("vgg11", num_classes=10, width=0.125))
    with torch.no_grad():
        model.classifier.weight.mul_(1e5)
    path = tmp_path_factory.mktemp("loud") / "loud.onnx"
    export_onnx(model, path, input_size=[3, 32, 32], metadata=metadata("vgg11"))
    return model, path


def test_rounding_of_large_logits_passes_on_the_float64_look(loud):
    model, path = loud
    x = images(32)
    result = check_parity(model, path, x)
    assert result.max_abs_diff > result.atol  # the absolute tolerance alone refused this faithful export
    assert result.passed and result.float64["images"] == 8
    (row,) = result.float64["outputs"]
    assert 0 < row["torch_fp32_error"] and row["onnx_error"] <= row["tolerance"] == 10 * row["torch_fp32_error"]
    assert "against float64 on the 8 inputs that differed most" in result.summary()
    assert result.to_dict()["float64"] == result.float64 and result.to_dict()["passed"]


def test_a_slightly_different_computation_still_fails(loud, tmp_path):
    model, path = loud
    tampered = onnx.load(str(path))
    gemm = next(n for n in tampered.graph.node if n.op_type == "Gemm")
    init = next(t for t in tampered.graph.initializer if t.name == gemm.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.0001, init.name))  # 0.01%
    onnx.save(tampered, str(tmp_path / "tampered.onnx"))
    with pytest.raises(ParityError, match="against float64 .* ONNX Runtime is off by"):
        check_parity(model, tmp_path / "tampered.onnx", images(32))


def test_a_model_that_cannot_run_in_float64_keeps_its_failure(loud):
    model, path = loud

    class Float32Only(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = copy.deepcopy(model)

        def forward(self, x):
            if x.dtype != torch.float32:
                raise RuntimeError("float32 only")
            return self.inner(x)

    result = check_parity(Float32Only(), path, images(32), raise_on_failure=False)
    assert not result.passed and result.float64 is None and "float64" not in result.to_dict()


def test_a_faithful_export_within_atol_is_not_looked_at_again(vgg_onnx):
    model, path = vgg_onnx
    result = check_parity(model, path, images(16))
    assert result.passed and result.float64 is None and np.isfinite(result.max_abs_diff)
