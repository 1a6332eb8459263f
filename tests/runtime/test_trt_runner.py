"""TensorRT runner: engine tests run where TensorRT and a CUDA GPU exist and are skipped, visibly, elsewhere.

The cuda-python result checking and the missing-package message are tested everywhere they can be.
"""

import json

import numpy as np
import onnx
import pytest
from onnx_builders import tiny_cnn

from compress.runtime.errors import ArtifactError, CudaError, MissingExtraError
from compress.runtime.optional import has_module


def _gpu_count() -> int:
    try:
        from compress.runtime.optional import cudart

        err, count = cudart().cudaGetDeviceCount()
        return int(count) if int(err) == 0 else 0
    except Exception:  # noqa: BLE001
        return 0


HAS_TRT = has_module("tensorrt")
GPUS = _gpu_count()
needs_trt = pytest.mark.skipif(not (HAS_TRT and GPUS), reason=(
    "needs TensorRT and a CUDA GPU: " + ("no tensorrt module" if not HAS_TRT else "no CUDA device")))


def test_missing_tensorrt_names_the_extra(tmp_path):
    if HAS_TRT:
        pytest.skip("TensorRT is installed here")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a plan")
    from compress.runtime.runners import open_runner

    with pytest.raises(MissingExtraError, match=r"cnn-compress\[trt\]"):
        open_runner(engine, "trt")


@pytest.mark.skipif(not (has_module("cuda.bindings") or has_module("cuda.cudart")), reason="cuda-python not installed")
def test_cuda_results_are_checked():
    from compress.runtime.cuda_rt import call
    from compress.runtime.optional import cudart

    rt = cudart()
    assert call((rt.cudaError_t.cudaSuccess, 7), "x") == 7
    assert call((rt.cudaError_t.cudaSuccess,), "x") is None
    assert call((rt.cudaError_t.cudaSuccess, 1, 2), "x") == (1, 2)
    with pytest.raises(CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        call((rt.cudaError_t.cudaErrorMemoryAllocation, None), "cudaMalloc")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from compress.exporting.tensorrt_build import BatchProfile, build_engine

    d = tmp_path_factory.mktemp("trt")
    onnx_path = d / "tiny.onnx"
    onnx.save(tiny_cnn(), str(onnx_path))
    build_engine(onnx_path, d / "tiny.engine", profile=BatchProfile(1, 2, 4), log=lambda m: None)
    return onnx_path, d / "tiny.engine"


def _x(n):
    return np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32)


@needs_trt
@pytest.mark.trt
@pytest.mark.parametrize("cuda_graph", [False, True], ids=["stream", "cuda-graph"])
def test_engine_matches_onnx_runtime_and_times_both_spans(engine, cuda_graph):
    from compress.runtime.runners import open_runner

    onnx_path, engine_path = engine
    with open_runner(engine_path, "trt", cuda_graph=cuda_graph) as trt_run, open_runner(onnx_path) as ref:
        assert (trt_run.min_batch, trt_run.max_batch) == (1, 4)
        assert trt_run.metadata["mean"] == [0.5, 0.5, 0.5]  # carried by the sidecar
        x = _x(6)  # two chunks within the profile
        np.testing.assert_allclose(trt_run.infer(x), ref.infer(x), rtol=1e-3, atol=1e-3)
        t = trt_run.measure(_x(4), warmup=2, iters=5)
        assert t.iterations == 5 and len(t.compute_ms) == 5
        assert all(0 < c <= e for c, e in zip(t.compute_ms, t.end_to_end_ms))
        mem = trt_run.gpu_memory()
        assert mem["engine_device_memory_bytes"] is not None and mem["io_buffers_bytes"] > 0
        with pytest.raises(ValueError, match="optimization profile"):
            trt_run.prepare(8)


@needs_trt
@pytest.mark.trt
def test_engine_with_a_mismatched_sidecar_is_refused(engine, tmp_path):
    from compress.runtime.trt_runner import TrtRunner

    _, engine_path = engine
    copy = tmp_path / "copy.engine"
    copy.write_bytes(engine_path.read_bytes())
    side = json.loads(engine_path.with_name(engine_path.name + ".json").read_text())
    side["tensorrt_version"] = "0.0.1"
    copy.with_name(copy.name + ".json").write_text(json.dumps(side))
    with pytest.raises(ArtifactError, match="TensorRT 0.0.1"):
        TrtRunner(copy)


@needs_trt
@pytest.mark.trt
def test_bench_report_for_an_engine(engine):
    from compress.runtime.bench import BenchSettings, bench_variant

    onnx_path, engine_path = engine
    v = bench_variant(engine_path, BenchSettings(backend="trt", batches=(1, 4, 8), iters=5, warmup=2, power="none"),
                      log=lambda m: None)
    assert v["status"] == "partial"  # batch 8 is outside the 1:2:4 profile
    assert [r["status"] for r in v["latency"]] == ["ok", "ok", "failed"]
    assert v["latency"][0]["compute"]["p50_ms"] <= v["latency"][0]["end_to_end"]["p50_ms"]
    assert v["model"]["macs"] == 6952  # counted from the ONNX file the sidecar names
