"""Parity checks: pass on a faithful export, raise a one-line ParityError beyond tolerance, and
report both accuracies when labels are given."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compress.exporting.errors import OnnxFileError, ParityError
from compress.exporting.parity import check_parity
from export_helpers import images


def _tampered(src, dst, factor):
    """Copy of an ONNX file with the classifier weights scaled by `factor`."""
    model = onnx.load(str(src))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    init = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(model, str(dst))
    return dst


def test_a_small_drift_beyond_atol_is_an_error(vgg_onnx, tmp_path):
    model, path = vgg_onnx
    bad = _tampered(path, tmp_path / "bad.onnx", 1.01)
    with pytest.raises(ParityError) as err:
        check_parity(model, bad, images(16), atol=1e-3, min_agreement=0.999)
    message = str(err.value)
    assert "\n" not in message and "fails parity" in message and "max |Δlogit|" in message
    result = check_parity(model, bad, images(16), atol=1e-3, raise_on_failure=False)
    assert not result.passed and result.max_abs_diff > 1e-3


def test_top1_disagreement_is_an_error_even_within_atol(vgg_onnx, tmp_path):
    model, path = vgg_onnx
    flipped = _tampered(path, tmp_path / "neg.onnx", -1.0)
    with pytest.raises(ParityError, match="top-1 agreement"):
        check_parity(model, flipped, images(16), atol=1e9, min_agreement=0.999)


def test_reference_can_be_a_callable_or_another_onnx_file(vgg_onnx):
    model, path = vgg_onnx
    x = images(8)
    via_onnx = check_parity(path, path, x)
    assert via_onnx.max_abs_diff == 0.0
    import torch

    def fn(a):
        with torch.no_grad():
            return model(torch.from_numpy(a)).numpy()

    assert check_parity(fn, path, x).passed


def test_accuracies_with_labels(vgg_onnx):
    model, path = vgg_onnx
    x = images(20)
    import torch

    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    labels[:5] = (labels[:5] + 1) % 10  # five wrong on purpose: both accuracies must be 75%
    result = check_parity(model, path, x, labels=labels, accuracy_tol=0.0005)
    assert result.accuracy_reference == result.accuracy_onnx == 0.75
    assert "accuracy reference 75.00%" in result.summary()


def test_bad_inputs_and_missing_files(vgg_onnx, tmp_path):
    model, path = vgg_onnx
    with pytest.raises(ValueError, match="N×C×H×W"):
        check_parity(model, path, np.zeros((3, 32, 32), np.float32))
    with pytest.raises(OnnxFileError, match="not found"):
        check_parity(model, tmp_path / "none.onnx", images(2))
