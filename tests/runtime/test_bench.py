"""Harness behaviour: settings checks, noise warnings, model.json widths, power windows."""

import json

import numpy as np
import onnx
import pytest
from onnx_builders import tiny_cnn

from compress.runtime.bench import BenchSettings, bench_variant, find_model_json, run_benchmark
from compress.runtime.power import PowerSampler


@pytest.mark.parametrize("kwargs,message", [
    ({"backend": "tflite"}, "unknown backend"),
    ({"batches": (0,)}, "positive"),
    ({"iters": None}, "exactly one"),
    ({"iters": 10, "duration_s": 1.0}, "exactly one"),
    ({"iters": 1}, "at least 2"),
    ({"warmup": -1}, "warmup"),
    ({"power": "wall-socket"}, "power"),
])
def test_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchSettings(**kwargs)


def test_noisy_timings_warn_in_the_row_and_the_variant(tiny_onnx, monkeypatch):
    from compress.runtime.ort_runner import OrtRunner

    samples = iter([1.0, 1.0, 2.0, 1.0, 3.0, 1.0] * 10)
    monkeypatch.setattr(OrtRunner, "_step", lambda self, x: (lambda: (next(samples), None)))
    v = bench_variant(tiny_onnx, BenchSettings(batches=(1,), iters=6, warmup=0), log=lambda m: None)
    row = v["latency"][0]
    assert row["end_to_end"]["p50_ms"] == 1.0 and row["end_to_end"]["max_ms"] == 3.0
    assert row["warnings"] and "coefficient of variation" in row["warnings"][0]
    assert row["warnings"][0] in v["warnings"]


def test_widths_and_reference_accuracy_come_from_model_json(tmp_path):
    d = tmp_path / "finetuned"
    d.mkdir()
    onnx.save(tiny_cnn(), str(d / "model.onnx"))
    (d / "model.json").write_text(json.dumps({
        "format": "compress.model/1", "accuracy": 0.91,
        "widths": {"conv": {"type": "Conv2d", "in_channels": 3, "out_channels": 4, "groups": 1},
                   "bn": {"type": "BatchNorm2d", "num_features": 4},
                   "fc": {"type": "Linear", "in_features": 4, "out_features": 10}}}))
    assert find_model_json(d / "model.onnx", "onnx") == d / "model.json"
    settings = BenchSettings(batches=(2,), iters=2, warmup=0)
    v = bench_variant(d / "model.onnx", settings, model_dir=d, log=lambda m: None)
    assert v["status"] == "ok"
    assert v["widths"] == {"conv": 4, "fc": 10} and v["reference_accuracy"] == 0.91
    # Found beside a file that records no weights' hash, it could describe any model: not reported.
    beside = bench_variant(d / "model.onnx", settings, log=lambda m: None)
    assert beside["widths"] is None and beside["reference_accuracy"] is None
    assert any("not reported (--model-dir names it" in w for w in beside["warnings"])


def test_missing_artifact_is_a_failed_row(tmp_path):
    v = bench_variant(tmp_path / "gone.onnx", BenchSettings(batches=(1,), iters=2), log=lambda m: None)
    assert v["status"] == "failed" and "not found" in v["error"]


def test_power_windows_give_energy_per_image(tiny_onnx, monkeypatch):
    """A sampler that reads a constant 5 W: energy per image = 5 W x loop time / images."""
    class FiveWatts(PowerSampler):
        source = "test"

        def window(self, t0, t1):
            return {"source": "test", "rails": "R", "samples": 10, "avg_power_w": 5.0}

    monkeypatch.setattr("compress.runtime.power.make_sampler", lambda *a, **k: FiveWatts())
    v = bench_variant(tiny_onnx, BenchSettings(batches=(2,), iters=4, warmup=0, power="tegrastats"),
                      power_kind="tegrastats", log=lambda m: None)
    row = v["latency"][0]
    assert row["power"]["energy_per_image_mj"] == pytest.approx(5.0 * row["elapsed_s"] / 8 * 1000)
    assert v["power"]["per_batch"]["2"]["avg_power_w"] == 5.0
    assert "power_window" not in row


def test_energy_is_shared_over_every_inference_of_a_step(tiny_onnx, monkeypatch):
    """ONNX Runtime on a GPU times each step end to end and then compute only: two inferences of the batch
    per step, so the loop's energy is shared over twice the images (it was over-stated about 2x)."""
    class FiveWatts(PowerSampler):
        source = "test"

        def window(self, t0, t1):
            return {"source": "test", "rails": "R", "samples": 10, "avg_power_w": 5.0}

    monkeypatch.setattr("compress.runtime.power.make_sampler", lambda *a, **k: FiveWatts())
    monkeypatch.setattr("compress.runtime.ort_runner.OrtRunner.inferences_per_step", 2)
    v = bench_variant(tiny_onnx, BenchSettings(batches=(2,), iters=4, warmup=0, power="tegrastats"),
                      power_kind="tegrastats", log=lambda m: None)
    row = v["latency"][0]
    assert row["power"]["energy_per_image_mj"] == pytest.approx(5.0 * row["elapsed_s"] / 16 * 1000)


def test_nvml_gives_no_energy_figure_to_a_cpu_runtime(tiny_onnx, monkeypatch):
    """NVML reads the GPU board: beside ort-cpu it would report the idle card's power as the run's."""
    def no_sampler(*a, **k):
        raise AssertionError("an NVML sampler was started for a CPU runtime")

    monkeypatch.setattr("compress.runtime.power.make_sampler", no_sampler)
    # as on a machine with a GPU benchmarked beside it (ort-cpu,trt): the up-front check passes
    monkeypatch.setattr("compress.runtime.bench._check_power_source", lambda *a: None)
    report = run_benchmark([tiny_onnx], BenchSettings(batches=(1,), iters=2, warmup=0, power="nvml"),
                           log=lambda m: None)
    v = report["variants"][0]
    assert v["status"] == "ok" and v["power"] is None
    assert any("NVML measures the GPU board" in w for w in v["warnings"])


@pytest.mark.parametrize("power, backends, message", [
    ("nvml", ["ort-cpu", "openvino"], "every --backend here runs on the CPU"),
    ("tegrastats", ["ort-cpu"], "no tegrastats on this machine's PATH"),
])
def test_a_power_source_named_but_not_here_is_refused_before_anything_runs(tiny_onnx, monkeypatch, power,
                                                                           backends, message):
    """It was a warning inside a report that then had no energy figures, which the user had asked for."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("compress.runtime.bench.bench_variant", lambda *a, **k: pytest.fail("a variant ran"))
    with pytest.raises(ValueError, match=message):
        run_benchmark([tiny_onnx], BenchSettings(batches=(1,), iters=2, warmup=0, power=power),
                      backends=backends, log=lambda m: None)


def test_accuracy_uses_the_artifacts_normalization(tiny_onnx):
    from onnx_builders import MEAN, STD, reference_logits

    from compress.runtime.accuracy import normalize, onnx_accuracy

    images = np.random.default_rng(1).integers(0, 256, (9, 3, 8, 8), dtype=np.uint8)
    expected = reference_logits(tiny_cnn(), normalize(images, MEAN, STD)).argmax(1)
    labels = expected.copy()
    labels[:3] = (labels[:3] + 1) % 10
    result = onnx_accuracy(tiny_onnx, images, labels, batch_size=4)
    assert result == {"accuracy": pytest.approx(6 / 9), "correct": 6, "images": 9}


@pytest.mark.parametrize("file_isa, here, warning", [
    ("avx2", "vnni", "re-quantize with --cpu-isa vnni"),  # 7-bit weights: right everywhere, only less precise
    ("vnni", "avx2", "no VNNI, where int8 kernels saturate on them, so its outputs and accuracy here are not the file's"),
])
def test_int8_file_records_its_target_and_warns_off_target(tiny_onnx, tmp_path, monkeypatch, file_isa, here, warning):
    import numpy as np

    from compress.quantization import quantize_onnx, recipe_for
    from compress.runtime import cpu_features
    from compress.runtime.bench import BenchSettings, bench_variant

    out = tmp_path / f"int8-{file_isa}.onnx"
    quantize_onnx(tiny_onnx, out, np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32),
                  recipe=recipe_for("cpu", file_isa))
    monkeypatch.setattr(cpu_features, "int8_isa", lambda flags=None, machine=None: here)
    v = bench_variant(out, BenchSettings(batches=(1,), iters=2, warmup=0), log=lambda m: None)
    assert v["status"] == "ok" and v["quantization"]["target"] == "cpu"
    assert v["quantization"]["instruction_set"] == file_isa
    assert [w for w in v["warnings"] if "quantized" in w] == [next(w for w in v["warnings"] if warning in w)]


# --- several outputs, other input names (issue 17) ----------------------------------------------------------

def _data(n=12):
    from onnx_builders import CLASSES

    from compress.runtime.bench import EvalData

    rng = np.random.default_rng(0)
    return EvalData(rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), rng.integers(0, 10, n), CLASSES, "random")


def test_a_multi_output_model_is_timed_and_gets_no_accuracy(tmp_path):
    """Latency and memory on a detector-like graph (two outputs, input `images`, dynamic batch); accuracy is a
    classifier's figure, so it is skipped, said why, and the variant is still ok."""
    from onnx_builders import detector_like

    from compress.runtime.bench import run_benchmark

    path = tmp_path / "det.onnx"
    onnx.save(detector_like(input_name="images"), str(path))
    report = run_benchmark([path], BenchSettings(batches=(1, 4), iters=2, warmup=0, power="none"), data=_data(),
                           log=lambda m: None)
    v = report["variants"][0]
    assert v["status"] == "ok" and [r["status"] for r in v["latency"]] == ["ok", "ok"]
    assert v["outputs"] == [{"name": "boxes", "shape": [4, 8, 8], "dtype": "float32"},
                            {"name": "scores", "shape": [10], "dtype": "float32"}]
    assert v["memory"]["host"]["rss_after_load_bytes"] > 0 and v["model"]["macs"] == 6952
    assert v["accuracy"] is None and "2 outputs" in v["accuracy_skipped"]
    assert any("2 outputs" in w for w in v["warnings"])


@pytest.mark.parametrize("named", [True, False])
def test_a_classifier_of_other_classes_than_the_data_is_partial_whether_it_names_them_or_not(tmp_path, named):
    """Without compress.classes, 10 logits on 3-class data was `ok` (accuracy "not applicable"), and with them
    `partial`: the same missing accuracy got two statuses."""
    from onnx_builders import tiny_cnn

    from compress.runtime.bench import EvalData, run_benchmark

    model = tiny_cnn()
    if not named:
        kept = [(p.key, p.value) for p in model.metadata_props if p.key != "compress.classes"]
        del model.metadata_props[:]
        for k, value in kept:
            model.metadata_props.add(key=k, value=value)
    path = tmp_path / "ten.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(0)
    data = EvalData(rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8), rng.integers(0, 3, 6), ["a", "b", "c"],
                    "three")
    v = run_benchmark([path], BenchSettings(batches=(2,), iters=2, warmup=0, power="none"), data=data,
                      log=lambda m: None)["variants"][0]
    assert v["status"] == "partial" and v["accuracy"] is None and "accuracy_skipped" not in v
    said = "three has 3 classes, ten.onnx 10" if named else "three has 3 classes, ten.onnx outputs 10 logits"
    assert [w for w in v["warnings"] if w.startswith("accuracy")] == [f"accuracy skipped: {said}"]


@pytest.mark.parametrize("outputs,words", [(("boxes",), "output is N x 4 x 8 x 8"), (("scores",), None)])
def test_one_output_is_a_classifier_only_when_it_is_batch_by_classes(tmp_path, outputs, words):
    from onnx_builders import detector_like

    from compress.runtime.bench import run_benchmark

    path = tmp_path / "one.onnx"
    onnx.save(detector_like(dict_order=outputs), str(path))
    v = run_benchmark([path], BenchSettings(batches=(2,), iters=2, warmup=0, power="none"), data=_data(),
                      log=lambda m: None)["variants"][0]
    assert v["status"] == "ok"
    if words is None:
        assert v["accuracy"]["images"] == 12 and "accuracy_skipped" not in v
    else:
        assert v["accuracy"] is None and words in v["accuracy_skipped"]


def test_bench_cli_on_a_detector_with_dynamic_batch(tmp_path):
    from click.testing import CliRunner
    from onnx_builders import detector_like

    from compress.cli import main

    path = tmp_path / "yolo-ish.onnx"
    onnx.save(detector_like(input_name="images"), str(path))
    result = CliRunner().invoke(main, ["bench", str(path), "--batch", "1,3", "--iters", "2", "--warmup", "0",
                                       "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    v = json.loads(result.stdout)["variants"][0]
    assert v["status"] == "ok" and [r["batch"] for r in v["latency"] if r["status"] == "ok"] == [1, 3]
    assert [o["name"] for o in v["outputs"]] == ["boxes", "scores"]


def test_no_accuracy_when_the_data_names_its_classes_otherwise(tmp_path):
    """Ten classes each side, but in another order: the labels would be scored against the wrong logits
    (the torch side refuses the same mismatch, compress.stages._run)."""
    from onnx_builders import CLASSES, tiny_cnn

    from compress.runtime.bench import EvalData

    path = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), str(path))
    data = _data()
    swapped = EvalData(data.images, data.labels, [CLASSES[1], CLASSES[0], *CLASSES[2:]], "swapped")
    v = run_benchmark([path], BenchSettings(batches=(1,), iters=2, warmup=0, power="none"), data=swapped,
                      log=lambda m: None)["variants"][0]
    assert v["status"] == "partial" and v["accuracy"] is None  # asked for, and missing: not "ok"
    assert any("class 0 is 'c1' in swapped but 'c0' in" in w for w in v["warnings"])
    same = run_benchmark([path], BenchSettings(batches=(1,), iters=2, warmup=0, power="none"), data=data,
                         log=lambda m: None)["variants"][0]
    assert same["accuracy"]["images"] == 12


def test_a_model_that_ignores_the_batch_is_not_measured_there(tmp_path):
    from onnx_builders import first_image_only

    from compress.runtime.accuracy import runner_accuracy
    from compress.runtime.errors import ArtifactError
    from compress.runtime.runners import open_runner

    path = tmp_path / "first.onnx"
    onnx.save(first_image_only(), str(path))
    quiet = {"log": lambda m: None}
    both = bench_variant(path, BenchSettings(batches=(1, 4), iters=2, warmup=0), **quiet)
    assert both["status"] == "partial" and [r["status"] for r in both["latency"]] == ["ok", "failed"]
    assert "no output has the batch of 4 first" in both["latency"][1]["error"]
    only = bench_variant(path, BenchSettings(batches=(4,), iters=2, warmup=0), **quiet)
    assert only["status"] == "failed" and "no output has the batch of 4 first" in only["latency"][0]["error"]
    images = np.zeros((8, 3, 8, 8), np.uint8)
    with open_runner(path) as runner, pytest.raises(ArtifactError, match="no output has the batch of 4 first"):
        runner_accuracy(runner, images, np.zeros(8, np.int64), batch_size=4)


def test_an_input_size_the_graph_contradicts_is_named(tmp_path):
    from onnx_builders import with_metadata

    path = tmp_path / "m.onnx"
    onnx.save(with_metadata(tiny_cnn(), input_size="[3, 16, 16]"), str(path))
    v = bench_variant(path, BenchSettings(batches=(1,), iters=2, warmup=0), log=lambda m: None)
    assert v["status"] == "ok" and v["input_shape"] == [3, 8, 8]
    assert any("input_size [3, 16, 16] disagrees with the graph's input [3, 8, 8]" in w for w in v["warnings"])


def test_an_engine_on_an_onnx_backend_is_refused_before_its_sidecar_is_read(tmp_path, monkeypatch):
    """A sidecar's onnx_path may name any file (8 GB, /proc/kcore): it was hashed before the refusal."""
    import compress.runtime.file_hash as file_hash

    (tmp_path / "m.engine").write_bytes(b"plan")
    (tmp_path / "m.engine.json").write_text(json.dumps({"format": "compress.engine/1", "onnx_path": "/etc/hostname",
                                                        "onnx_sha256": "0" * 64}))
    monkeypatch.setattr(file_hash, "sha256_file", lambda p: pytest.fail(f"hashed {p}"))
    v = bench_variant(tmp_path / "m.engine", BenchSettings(batches=(1,), iters=2), log=lambda m: None)
    assert v["status"] == "failed" and "is an engine file" in v["error"]


def test_another_tools_file_without_the_batch_first_is_timed_with_a_warning(tmp_path):
    """Other tools' detectors flatten a batch's detections into rows that carry the image index (ONNX
    NonMaxSuppression, end-to-end YOLO exports): refusing them would refuse models that compute every image.
    A classifier's accuracy is still refused when the rows are not one per image."""
    from onnx_builders import first_image_only

    from compress.runtime.accuracy import runner_accuracy
    from compress.runtime.errors import ArtifactError
    from compress.runtime.runners import open_runner

    model = first_image_only()
    kept = [p for p in model.metadata_props if p.key != "compress.toolkit_version"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    v = bench_variant(path, BenchSettings(batches=(1, 4), iters=2, warmup=0), log=lambda m: None)
    assert v["status"] == "ok" and [r["status"] for r in v["latency"]] == ["ok", "ok"]
    assert any("no output has the batch of 4 first" in w and "not per image" in w for w in v["latency"][1]["warnings"])
    with open_runner(path) as runner, pytest.raises(ArtifactError, match="returns 1 rows of logits for 4 images"):
        runner_accuracy(runner, np.zeros((8, 3, 8, 8), np.uint8), np.zeros(8, np.int64), batch_size=4)
