"""The ONNX Runtime runner on a tiny hand-built model: outputs, batching, timing, refusals."""

import types

import numpy as np
import onnx
import pytest
from onnx_builders import CLASSES, MEAN, STD, reference_logits, tiny_cnn

from compress.runtime.errors import ArtifactError, BackendUnavailableError
from compress.runtime.ort_runner import OrtRunner
from compress.runtime.runners import open_runner


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def test_outputs_match_a_numpy_reference(tiny_onnx):
    with open_runner(tiny_onnx, "ort-cpu") as runner:
        assert runner.providers == ["CPUExecutionProvider"]
        assert runner.input_shape == (3, 8, 8) and runner.fixed_batch is None
        assert runner.metadata["classes"] == CLASSES and runner.metadata["mean"] == MEAN
        assert runner.metadata["std"] == STD and runner.metadata["precision"] == "fp32"
        x = _x(5)
        np.testing.assert_allclose(runner.infer(x), reference_logits(tiny_cnn(), x), rtol=1e-4, atol=1e-4)


def test_measure_iterations_and_duration(tiny_onnx):
    with OrtRunner(tiny_onnx) as runner:
        t = runner.measure(_x(4), warmup=2, iters=7)
        assert t.iterations == 7 and t.batch == 4 and t.compute_ms is None
        assert all(v > 0 for v in t.end_to_end_ms)
        assert t.elapsed_s >= sum(t.end_to_end_ms) / 1000.0
        d = runner.measure(_x(1), warmup=0, duration_s=0.05)
        assert d.iterations >= 2 and d.elapsed_s >= 0.05
        with pytest.raises(ValueError, match="exactly one"):
            runner.measure(_x(1), iters=5, duration_s=1.0)
        with pytest.raises(ValueError, match="at least 2"):
            runner.measure(_x(1), iters=1)


def test_static_batch_pads_for_inference_and_refuses_other_batches(tmp_path):
    path = tmp_path / "static.onnx"
    onnx.save(tiny_cnn(batch=4), str(path))
    with OrtRunner(path) as runner:
        assert runner.fixed_batch == 4
        x = _x(6)
        out = runner.infer(x)  # 4 + 2 padded to 4
        assert out.shape == (6, 10)
        np.testing.assert_allclose(out, reference_logits(tiny_cnn(), x), rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="static batch of 4"):
            runner.measure(_x(1), iters=2)


def test_truncated_file_is_a_one_line_artifact_error(tiny_onnx, tmp_path):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(tiny_onnx.read_bytes()[:200])
    with pytest.raises(ArtifactError, match="cannot load") as exc:
        OrtRunner(bad)
    assert "\n" not in str(exc.value)
    with pytest.raises(ArtifactError, match="not found"):
        OrtRunner(tmp_path / "absent.onnx")


def test_wrong_artifact_kind_for_the_backend(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ArtifactError, match="runs .onnx files"):
        open_runner(engine, "ort-cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        open_runner(engine, "tflite")


def test_unavailable_provider_is_refused(tiny_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        OrtRunner(tiny_onnx, backend="ort-cuda")


def test_silent_fallback_to_cpu_is_refused(tiny_onnx, monkeypatch):
    """onnxruntime-gpu without working CUDA libraries creates a CPU-only session without raising."""
    import onnxruntime as real

    class FallbackSession(real.InferenceSession):
        def __init__(self, path, sess_options=None, providers=None):
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    fake = types.SimpleNamespace(
        __version__=real.__version__, SessionOptions=real.SessionOptions, InferenceSession=FallbackSession,
        get_available_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr("compress.runtime.ort_runner.onnxruntime", lambda: fake)
    with pytest.raises(BackendUnavailableError, match="fell back"):
        OrtRunner(tiny_onnx, backend="ort-cuda")


@pytest.mark.gpu
def test_cuda_provider_times_end_to_end_and_compute(tiny_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with the CUDA execution provider")
    with OrtRunner(tiny_onnx, backend="ort-cuda") as runner:
        assert runner.providers[0] == "CUDAExecutionProvider"
        x = _x(3)
        np.testing.assert_allclose(runner.infer(x), reference_logits(tiny_cnn(), x), rtol=1e-3, atol=1e-3)
        t = runner.measure(x, warmup=2, iters=5)
        assert t.compute_ms is not None and len(t.compute_ms) == 5
