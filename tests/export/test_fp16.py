"""FP16 ONNX: float32 at the edges, FP16 inside, parity against the FP32 file, metadata carried."""

import onnx
import pytest

from compress.exporting._files import sha256_file
from compress.exporting.errors import ExportError
from compress.exporting.fp16 import convert_fp16, precision_of
from compress.exporting.metadata import read_metadata
from compress.exporting.parity import FP16_MIN_AGREEMENT, FP16_REL_TOL, check_parity
from export_helpers import images


def test_fp16_copy_keeps_float32_io_and_passes_parity(vgg_onnx, tmp_path):
    _, fp32 = vgg_onnx
    fp16 = convert_fp16(fp32, tmp_path / "m.fp16.onnx")
    model = onnx.load(str(fp16))
    assert precision_of(model) == "fp16"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in model.graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert sum(t.ByteSize() for t in model.graph.initializer) < 0.6 * sum(
        t.ByteSize() for t in onnx.load(str(fp32)).graph.initializer)
    meta = read_metadata(fp16)
    assert meta["precision"] == "fp16" and meta["source_sha256"] == sha256_file(fp32)
    assert meta["classes"] == read_metadata(fp32)["classes"]
    result = check_parity(fp32, fp16, images(32), min_agreement=FP16_MIN_AGREEMENT, rel_tol=FP16_REL_TOL)
    assert result.passed and result.max_abs_diff > 0  # really ran in reduced precision


def test_converting_twice_is_refused(vgg_onnx, tmp_path):
    _, fp32 = vgg_onnx
    fp16 = convert_fp16(fp32, tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="already fp16"):
        convert_fp16(fp16, tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()


def _scaled_classifier(src, dst, factor):
    """Copy of an ONNX file whose classifier weights (FP16 or FP32) are multiplied by `factor`."""
    from onnx import numpy_helper

    model = onnx.load(str(src))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    init = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    array = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array((array * factor).astype(array.dtype), init.name))
    onnx.save(model, str(dst))
    return dst


def test_fp16_tolerance_is_tight_enough_to_catch_a_five_percent_drift(vgg_onnx, tmp_path):
    """The honest FP16 error sits well inside FP16_REL_TOL, and a 5 % logit drift lies outside it: a bound
    ten times looser (or tighter) than the one shipped fails this test."""
    from compress.exporting.errors import ParityError

    _, fp32 = vgg_onnx
    fp16 = convert_fp16(fp32, tmp_path / "m.fp16.onnx")
    x = images(32)
    honest = check_parity(fp32, fp16, x, min_agreement=FP16_MIN_AGREEMENT, rel_tol=FP16_REL_TOL)
    assert honest.logit_scale > 1.0  # a real signal (lively model)
    assert honest.max_abs_diff < 0.25 * honest.atol
    assert honest.atol == pytest.approx(FP16_REL_TOL * honest.logit_scale)
    drifted = _scaled_classifier(fp16, tmp_path / "drift.onnx", 1.05)
    with pytest.raises(ParityError, match="fails parity"):
        check_parity(fp32, drifted, x, min_agreement=0.0, rel_tol=FP16_REL_TOL)


def test_values_between_1e4_and_fp16s_largest_are_kept(tmp_path):
    """onnxconverter-common clamps values above 1e4 by default; FP16 holds them up to 65504."""
    import numpy as np
    from onnx import helper, numpy_helper

    scale = numpy_helper.from_array(np.array([30000.0, 70000.0], np.float32), "scale")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "scale"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))
    half = onnx.load(str(convert_fp16(tmp_path / "m.onnx", tmp_path / "h.onnx")))
    kept = numpy_helper.to_array(next(t for t in half.graph.initializer if t.name == "scale"))
    assert kept.dtype == np.float16 and kept.tolist() == [30000.0, 65504.0]
