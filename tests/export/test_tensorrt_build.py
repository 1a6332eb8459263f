"""TensorRT engine building: batch profiles, the missing-extra message, and a real build where
TensorRT and a GPU exist (skipped, with the reason shown, elsewhere)."""

import builtins
import importlib.util

import pytest

from compress.exporting.errors import MissingExtraError, OnnxFileError, TrtReadinessError
from compress.exporting.tensorrt_build import BatchProfile, build_engine, import_tensorrt, parse_profile


def test_batch_profiles():
    assert parse_profile("1:8:32") == BatchProfile(1, 8, 32)
    assert parse_profile(4) == BatchProfile(4, 4, 4)
    for bad in ("8:1:32", "0:1:2", "1:2", "a:b:c", "1:2:3:4"):
        with pytest.raises(ValueError, match="batch profile"):
            parse_profile(bad)


def test_missing_tensorrt_names_the_extra(monkeypatch, vgg_onnx, tmp_path):
    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt" or name.startswith("tensorrt."):
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(MissingExtraError, match=r"pip install 'cnn-compress\[trt\]'"):
        import_tensorrt()
    _, onnx_path = vgg_onnx
    with pytest.raises(MissingExtraError, match=r"cnn-compress\[trt\]"):
        build_engine(onnx_path, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_corrupt_onnx_is_refused_before_tensorrt_is_needed(vgg_onnx, tmp_path):
    _, path = vgg_onnx
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(OnnxFileError, match="cut.onnx"):
        build_engine(cut, tmp_path / "m.engine")
    assert not (tmp_path / "m.engine").exists()


def test_graph_tensorrt_cannot_build_is_refused_before_tensorrt_is_needed(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], name="q")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, ["batch", 3, 8, 8])],
        initializer=[numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(5), "z")])
    path = tmp_path / "asym.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(TrtReadinessError, match="non-zero zero point"):
        build_engine(path, tmp_path / "m.engine")


def _gpu_ready() -> str | None:
    """None when a TensorRT build can run here, else the reason it cannot."""
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install 'cnn-compress[trt]')"
    if importlib.util.find_spec("cuda") is None:
        return "cuda-python is not installed (pip install 'cnn-compress[trt]')"
    try:
        from compress.exporting.tensorrt_build import gpu_identity

        gpu_identity()
    except Exception as exc:  # noqa: BLE001
        return f"no usable CUDA GPU: {exc}"
    return None


@pytest.mark.trt
@pytest.mark.skipif(_gpu_ready() is not None, reason=str(_gpu_ready()))
def test_fp16_engine_builds_and_its_sidecar_matches(vgg_onnx, tmp_path):
    import tensorrt as trt

    from compress.exporting.engine_sidecar import check_sidecar
    from compress.exporting.fp16 import convert_fp16
    from compress.exporting.tensorrt_build import gpu_identity

    _, fp32 = vgg_onnx
    fp16 = convert_fp16(fp32, tmp_path / "m.fp16.onnx")
    cache = tmp_path / "timing.cache"
    info = build_engine(fp16, tmp_path / "m.engine", profile=BatchProfile(1, 4, 8), workspace_mb=256,
                        timing_cache=cache, opt_level=1, log=lambda _m: None)
    assert info["precision"] == "fp16" and info["profile"]["max"] == [8, 3, 32, 32]
    assert cache.stat().st_size > 0 and (tmp_path / "m.engine").stat().st_size == info["engine_size"]
    name, cc = gpu_identity()
    assert check_sidecar(tmp_path / "m.engine", trt.__version__, name, cc)["onnx_sha256"] == info["onnx_sha256"]
