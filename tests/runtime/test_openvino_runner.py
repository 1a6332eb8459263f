"""OpenVINO reproduces ONNX Runtime's outputs on the same ONNX files, within each precision's tolerance."""

import sys

import numpy as np
import onnx
import pytest
from onnx_builders import tiny_cnn

from compress.runtime.errors import BackendUnavailableError, MissingExtraError
from compress.runtime.runners import open_runner

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'cnn-compress[openvino]')")

RNG = np.random.default_rng(0)
X = RNG.standard_normal((16, 3, 8, 8)).astype(np.float32)


def ort_logits(path, x, optimized=True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def openvino_logits(path, x, backend="openvino"):
    with open_runner(path, backend) as runner:
        return runner.infer(x), runner


def test_fp32_matches_onnx_runtime(tiny_onnx):
    got, runner = openvino_logits(tiny_onnx, X)
    np.testing.assert_allclose(got, ort_logits(tiny_onnx, X), rtol=1e-4, atol=1e-4)
    assert runner.ran_at == "fp32" and runner.fixed_batch is None and runner.input_shape == (3, 8, 8)
    info = runner.info()
    assert info["requested"]["inference_precision"] == "f32"
    assert info["compiled_per_batch"][16]["inference_precision"] == "f32"
    assert info["compiled_per_batch"][16]["performance_hint"] == "LATENCY"


def test_bf16_matches_within_bfloat16_tolerance(tiny_onnx):
    from compress.runtime.openvino_runner import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no BF16 (avx512_bf16 / amx_bf16)")
    got, runner = openvino_logits(tiny_onnx, X, "openvino-bf16")
    ref = ort_logits(tiny_onnx, X)
    scale = np.abs(ref).max()
    # bfloat16 keeps 8 significant bits: a relative error of 2^-8 per rounding, a few roundings deep.
    assert np.abs(got - ref).max() <= 0.03 * scale
    assert not np.array_equal(got, ref)  # it really ran at a lower precision
    assert runner.ran_at == "bf16"


def test_int8_cpu_target_matches_onnx_runtime_int8(tiny_onnx, tmp_path):
    """A `quantize --target cpu` file runs on both; the difference is a few int8 steps, not a wrong graph.
    The recipe is this machine's, as the command's default: a VNNI file on a CPU without VNNI saturates in
    both runtimes (19% of the largest logit on a 2-core AVX2-only EPYC, 2026-12-07), which is what the
    avx2 recipe's 7-bit weights are for and what `compress bench` warns about (test_bench)."""
    from compress.quantization import quantize_onnx, recipe_for

    calib = RNG.standard_normal((64, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "tiny-int8.onnx"
    quantize_onnx(tiny_onnx, out, calib, recipe=recipe_for("cpu", "auto"))
    got, runner = openvino_logits(out, X)
    ref_int8 = ort_logits(out, X)
    ref_fp32 = ort_logits(tiny_onnx, X)
    scale = np.abs(ref_fp32).max()
    assert np.abs(got - ref_int8).max() <= 0.05 * scale
    assert np.abs(got - ref_fp32).max() <= 0.1 * scale
    assert runner.ran_at == "int8 + fp32"


def test_static_batch_and_metadata(tmp_path):
    path = tmp_path / "static.onnx"
    onnx.save(tiny_cnn(batch=2), str(path))
    with open_runner(path, "openvino") as runner:
        assert runner.fixed_batch == 2 and runner.metadata["precision"] == "fp32"
        assert runner.infer(X[:3]).shape == (3, 10)  # chunks of 2, the last padded
        with pytest.raises(ValueError, match="static batch"):
            runner.prepare(3)


def test_bf16_refused_without_cpu_support(tiny_onnx, monkeypatch):
    from compress.runtime import openvino_runner

    monkeypatch.setattr(openvino_runner, "bf16_supported", lambda core=None: False)
    with pytest.raises(BackendUnavailableError, match="BF16"):
        open_runner(tiny_onnx, "openvino-bf16")
    from compress.runtime.bench import BenchSettings, run_benchmark

    report = run_benchmark([tiny_onnx], BenchSettings(batches=(1,), iters=3, warmup=1),
                           backends=["ort-cpu", "openvino-bf16"], log=lambda m: None)
    ok, refused = report["variants"]
    assert ok["status"] == "ok" and refused["status"] == "failed" and "BF16" in refused["error"]


def test_missing_openvino_names_the_extra(tiny_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingExtraError, match=r"cnn-compress\[openvino\]"):
        open_runner(tiny_onnx, "openvino")


def test_side_by_side_report_marks_the_fastest(tiny_onnx, tmp_path):
    from compress.runtime.bench import BenchSettings, run_benchmark
    from compress.runtime.report import render_markdown

    report = run_benchmark([tiny_onnx], BenchSettings(batches=(1, 2), iters=5, warmup=1),
                           backends=["ort-cpu", "openvino"], log=lambda m: None)
    names = [v["name"] for v in report["variants"]]
    assert names == ["tiny.onnx [ort-cpu]", "tiny.onnx [openvino]"]
    assert report["settings"]["backends"] == ["ort-cpu", "openvino"]
    fastest = {f["batch"]: f for f in report["fastest"]}
    assert set(fastest) == {1, 2}
    for b, f in fastest.items():
        p50s = {v["backend"]: next(r["end_to_end"]["p50_ms"] for r in v["latency"] if r["batch"] == b)
                for v in report["variants"]}
        assert f["backend"] == min(p50s, key=p50s.get) and f["p50_ms"] == min(p50s.values())
    md = render_markdown(report)
    section = md.split("## Runtimes side by side")[1].split("\n## ")[0]
    assert section.count("**") == 4  # one bold cell per batch size


def test_throughput_hint_with_several_streams_is_named_a_one_request_figure(tiny_onnx):
    """The harness times one synchronous request at a time: under THROUGHPUT with several streams the
    figure is one stream's, which the row says rather than passing it off as the hint's throughput."""
    from compress.runtime.bench import BenchSettings, bench_variant

    settings = BenchSettings(backend="openvino", batches=(2,), iters=2, warmup=0, performance_hint="THROUGHPUT",
                             streams=2, power="none")
    v = bench_variant(tiny_onnx, settings, log=lambda m: None)
    assert v["runner"]["compiled_per_batch"][2]["num_streams"] == 2
    assert any("one stream's, not the hint's" in w for w in v["latency"][0]["warnings"])
    latency = bench_variant(tiny_onnx, BenchSettings(backend="openvino", batches=(2,), iters=2, warmup=0, power="none"),
                            log=lambda m: None)
    assert not any("hint" in w for w in latency["warnings"])
