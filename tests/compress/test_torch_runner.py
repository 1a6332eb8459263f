"""PyTorch reference runners on a model directory, agreeing with the same model run in ONNX Runtime."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backends need PyTorch")

from compress.runtime.errors import ArtifactError  # noqa: E402
from compress.runtime.runners import open_runner  # noqa: E402
from compress.torch_runner import TorchRunner, resolve_model_dir  # noqa: E402

CLASSES = [f"c{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from compress.artifact import save_model_dir
    from compress.exporting.onnx_export import export_onnx
    from compress.models import create_model

    from tests_support import lively

    torch.manual_seed(0)
    # Logits of order 1 (random BN statistics, a scaled classifier): a tolerance means something only
    # against a real signal, not the ~1e-3 logits of a freshly initialised network.
    model = lively(create_model("vgg11", num_classes=10, width=0.125))
    d = tmp_path_factory.mktemp("vgg11")
    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125}, "classes": CLASSES,
            "input_size": [3, 32, 32], "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    save_model_dir(model, d, meta)
    export_onnx(model, d / "model.onnx", input_size=[3, 32, 32],
                metadata={"classes": CLASSES, "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 32, 32],
                          "arch": "vgg11", "precision": "fp32", "source_sha256": "0" * 64, "toolkit_version": "0.1.0"})
    return d


def test_eager_matches_onnx_runtime(model_dir):
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with open_runner(model_dir, "torch", torch_device="cpu") as ref, open_runner(model_dir / "model.onnx") as ort:
        assert ref.backend == "torch" and ref.device == "cpu"
        assert ref.metadata["mean"] == [0.5] * 3 and ref.metadata["classes"] == CLASSES
        a, b = ref.infer(x), ort.infer(x)
        scale = float(np.abs(a).max())
        assert scale > 1.0 and a.std() > 0.3  # a real signal to compare
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)
        assert (a.argmax(1) == b.argmax(1)).all()
        t = ref.measure(x, warmup=1, iters=3)
        assert t.iterations == 3 and t.compute_ms is None


def test_onnx_path_stands_for_its_model_directory(model_dir, tmp_path):
    assert resolve_model_dir(model_dir / "model.onnx") == model_dir
    with pytest.raises(ArtifactError, match="not a model directory"):
        resolve_model_dir(tmp_path)


def test_compile_backend_wraps_the_model_with_torch_compile(model_dir, monkeypatch):
    """torch.compile itself (inductor, minutes on this CPU) is replaced; the wiring is what is tested."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m: calls.append(m) or m)
    with TorchRunner(model_dir, compile=True, device="cpu") as runner:
        assert runner.backend == "torch-compile" and len(calls) == 1
        assert runner.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


def test_each_cuda_runner_reports_its_own_peak_memory(model_dir, monkeypatch):
    """No GPU here: the CUDA calls are stand-ins; what is tested is that each runner's peak starts at its load."""
    peak = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: peak.update(bytes=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peak["bytes"])
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)
    with TorchRunner(model_dir, device="cuda") as big:
        peak["bytes"] = 5_000_000  # a larger artifact ran first
        assert big.gpu_memory() == {"torch_max_allocated_bytes": 5_000_000}
    with TorchRunner(model_dir, device="cuda") as small:
        peak["bytes"] = max(peak["bytes"], 1_000_000)
        assert small.gpu_memory() == {"torch_max_allocated_bytes": 1_000_000}


def test_every_tensor_a_forward_returns_is_an_output():
    """Tuples, lists and dicts of tensors (a detector's) are outputs in order, dict keys naming theirs."""
    from compress.torch_runner import flatten_outputs

    a, b, c = torch.zeros(2, 3), torch.ones(2, 4), torch.full((2, 1), 2.0)
    assert [n for n, _ in flatten_outputs(a, torch, "m")] == ["output"]
    assert [n for n, _ in flatten_outputs((a, [b, c]), torch, "m")] == ["output0", "output1.0", "output1.1"]
    named = flatten_outputs({"boxes": a, "aux": {"scores": b}}, torch, "m")
    assert [n for n, _ in named] == ["boxes", "aux.scores"] and named[1][1] is b
    with pytest.raises(ArtifactError, match="m: the model returned str"):
        flatten_outputs(("x",), torch, "m")


def test_the_torch_backends_are_registered_by_compress():
    from compress.runtime.backends import get_backend

    assert get_backend("torch").artifacts == ("model_dir", "onnx")
    assert get_backend("torch-compile").runner == "compress.torch_runner:from_options"
