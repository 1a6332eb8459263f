"""The runner base on models with several outputs: every output in the model's order, batches padded and
chunked per output, and `infer` refusing to pick one output of several."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx_builders import detector_like

from compress.runtime.errors import ArtifactError
from compress.runtime.runners import open_runner


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _reference(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


@pytest.mark.parametrize("order", [("boxes", "scores"), ("scores", "boxes")])
def test_every_output_comes_back_in_the_models_order(tmp_path, order):
    model = detector_like(input_name="images", dict_order=order)
    path = tmp_path / "det.onnx"
    onnx.save(model, str(path))
    x = _x(3)
    with open_runner(path, "ort-cpu") as runner:
        outs = runner.infer_all(x)
        assert runner.output_names == list(order)
        assert [o.shape for o in outs] == [(3, 4, 8, 8) if n == "boxes" else (3, 10) for n in order]
        for got, want in zip(outs, _reference(model, x)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        with pytest.raises(ArtifactError, match="returns 2 outputs"):
            runner.infer(x)


def test_a_static_batch_pads_and_cuts_every_output(tmp_path):
    dynamic, static = tmp_path / "dyn.onnx", tmp_path / "static.onnx"
    onnx.save(detector_like(), str(dynamic))
    onnx.save(detector_like(batch=4), str(static))
    x = _x(6)
    with open_runner(dynamic) as a, open_runner(static) as b:
        assert b.fixed_batch == 4
        want, got = a.infer_all(x), b.infer_all(x)  # 4 + 2 padded to 4
        assert [g.shape for g in got] == [(6, 4, 8, 8), (6, 10)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_an_output_without_the_batch_first_cannot_be_cut(tmp_path):
    """A constant output (anchors, say) does not grow with the batch: splitting it per batch would be wrong."""
    model = detector_like(batch=2)
    model.graph.node.append(helper.make_node("Constant", [], ["anchors"],
                                             value=helper.make_tensor("a", TensorProto.FLOAT, [7], [0.0] * 7)))
    model.graph.output.append(helper.make_tensor_value_info("anchors", TensorProto.FLOAT, [7]))
    path = tmp_path / "anchors.onnx"
    onnx.save(model, str(path))
    with open_runner(path) as runner:
        assert [o.shape for o in runner.infer_all(_x(2))] == [(2, 4, 8, 8), (2, 10), (7,)]  # one batch: as is
        with pytest.raises(ArtifactError, match="output anchors has shape \\[7\\], without the batch of 2 first"):
            runner.infer_all(_x(3))


def test_openvino_gives_every_output_too(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    path = tmp_path / "det.onnx"
    onnx.save(detector_like(input_name="data"), str(path))
    x = _x(2)
    with open_runner(path, "openvino") as runner:
        outs = runner.infer_all(x)
        assert runner.output_names == ["boxes", "scores"]
        for got, want in zip(outs, _reference(detector_like(input_name="data"), x)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_model_that_answers_one_image_for_a_batch_is_refused(tmp_path):
    """It was timed as if it computed the whole batch (4× the throughput) and its one answer was broadcast
    against every label."""
    from onnx_builders import first_image_only

    path = tmp_path / "first.onnx"
    onnx.save(first_image_only(), str(path))
    with open_runner(path) as runner:
        assert runner.infer_all(_x(1))[0].shape == (1, 10)  # at batch 1 it is right
        with pytest.raises(ArtifactError, match=r"no output has the batch of 4 first \(logits \[1, 10\]\)"):
            runner.infer_all(_x(4))


def test_duration_mode_stops_at_the_iteration_bound(tiny_onnx, monkeypatch):
    import compress.runtime.runner_base as base

    monkeypatch.setattr(base, "MAX_ITERS", 7)
    with open_runner(tiny_onnx) as runner:
        timings = runner.measure(_x(1), warmup=0, duration_s=60.0)
    assert timings.iterations == 7 and timings.elapsed_s < 30
