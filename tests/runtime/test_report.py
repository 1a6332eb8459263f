"""Reports: one run over several artifacts (one of them broken), JSON round trip, schema checks, rendering."""

import json

import numpy as np
import onnx
import pytest
from onnx_builders import CLASSES, tiny_cnn

from compress.runtime.bench import BenchSettings, EvalData, run_benchmark
from compress.runtime.report import SCHEMA, compute_ratios, load_report, render_markdown, to_json, write_report

SETTINGS = BenchSettings(batches=(1, 3), iters=3, warmup=1, power="none")


@pytest.fixture(scope="module")
def three_artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("artifacts")
    good, other, cut = d / "big.onnx", d / "small.onnx", d / "cut.onnx"
    onnx.save(tiny_cnn(seed=0), str(good))
    onnx.save(tiny_cnn(batch=3, seed=1), str(other))  # static batch 3: batch 1 cannot run
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return good, other, cut


@pytest.fixture(scope="module")
def report(three_artifacts):
    rng = np.random.default_rng(0)
    data = EvalData(rng.integers(0, 256, (12, 3, 8, 8), dtype=np.uint8), rng.integers(0, 10, 12), CLASSES, "random")
    return run_benchmark(list(three_artifacts), SETTINGS, data=data, command="compress bench ...", log=lambda m: None)


def test_broken_artifact_is_a_failed_row_and_the_others_run(report):
    big, small, cut = report["variants"]
    assert big["status"] == "ok" and big["error"] is None
    assert [row["status"] for row in big["latency"]] == ["ok", "ok"]
    assert big["accuracy"]["images"] == 12
    assert cut["status"] == "failed" and "cannot load" in cut["error"] and cut["latency"] == []
    # the static-batch model runs batch 3 and records batch 1 as a failed row
    assert small["status"] == "partial"
    assert small["latency"][0]["status"] == "failed" and "static batch of 3" in small["latency"][0]["error"]
    assert small["latency"][1]["status"] == "ok"


def test_latency_rows_hold_the_distribution(report):
    row = report["variants"][0]["latency"][1]
    assert row["batch"] == 3 and row["iterations"] == 3
    stats = row["end_to_end"]
    assert stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert row["throughput_img_s"] == pytest.approx(3 * 1000 / stats["mean_ms"])
    assert report["variants"][0]["model"]["params"] == 170 and report["variants"][0]["model"]["macs"] == 6952
    host = report["variants"][0]["memory"]["host"]
    assert host["rss_after_load_bytes"] > 0 and host["peak_rss_bytes"] >= host["rss_before_load_bytes"]


def test_ratios_are_against_the_first_variant(report):
    r = {x["name"]: x for x in report["ratios"]}
    assert r["big.onnx"]["speedup_p50"] == {"1": 1.0, "3": 1.0}
    assert r["small.onnx"]["params_ratio"] == 1.0 and r["small.onnx"]["speedup_p50"]["1"] is None
    assert r["cut.onnx"]["params_ratio"] is None


def test_schema_and_system_fields(report):
    assert report["schema"] == SCHEMA
    system = report["system"]
    for key in ("date", "cpu_model", "libraries", "os", "python", "git", "jetson"):
        assert key in system
    assert system["libraries"]["onnxruntime"]
    assert report["settings"]["backend"] == "ort-cpu" and report["settings"]["batches"] == [1, 3]


def test_round_trip_through_files(report, tmp_path):
    written = write_report(json.loads(to_json(report)), tmp_path / "out")
    loaded = load_report(tmp_path / "out")
    assert loaded == json.loads(written["json"].read_text())
    assert loaded["variants"][2]["status"] == "failed"
    assert (tmp_path / "out/latency_vs_batch.png").stat().st_size > 1000
    assert (tmp_path / "out/accuracy_vs_latency.png").is_file()
    assert loaded["plots"] == ["latency_vs_batch.png", "accuracy_vs_latency.png"]
    md = written["md"].read_text()
    assert "| cut.onnx | failed |" in md and "cannot load" in md
    assert not list((tmp_path / "out").glob(".*tmp"))


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.update(schema="compress.report/2"), "not supported"),
    (lambda r: r.update(schema="something/1"), "not a benchmark report"),
    (lambda r: r.pop("variants"), "lacks 'variants'"),
    (lambda r: r["variants"][0].update(status="great"), "status"),
    # Fields a renderer reads, of another type: each crashed a renderer with a raw exception after loading.
    (lambda r: r["variants"][0].update(latency="abc"), "field 'latency' must be a JSON list"),
    (lambda r: r.update(settings="x"), "'settings' must be a JSON object"),
    (lambda r: r.update(system=None), "laid out"),
    (lambda r: r["variants"][0].update(model="x"), "field 'model' must be a JSON object"),
    (lambda r: r.update(warnings=5), "'warnings' must be a JSON list"),
    (lambda r: r["variants"][0].update(accuracy={"accuracy": "x"}), "laid out"),
    (lambda r: r.update(paired=[{"rows": "x"}]), "laid out"),
    (lambda r: r["variants"][0]["latency"][0]["end_to_end"].update(p50_ms=10**400), "finite, non-negative"),
    (lambda r: r["variants"][0]["latency"][0]["end_to_end"].update(p50_ms="fast"), "finite, non-negative"),
    (lambda r: r["variants"][0]["latency"][0]["end_to_end"].update(p50_ms=-5), "finite, non-negative"),
    (lambda r: r["variants"][0]["latency"][0].update(batch="x"), "positive integer batch"),
])
def test_load_refuses_other_schemas_and_malformed_reports(report, tmp_path, mutate, message):
    broken = json.loads(to_json(report))
    mutate(broken)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=message):
        load_report(path)


def test_load_missing_and_invalid(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_report(tmp_path / "nope.json")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_report(tmp_path)


def test_widths_plot_from_model_json(report, tmp_path):
    r = json.loads(to_json(report))
    r["variants"][0]["widths"] = {"features.0": 64, "features.3": 128, "classifier": 10}
    r["variants"][1]["widths"] = {"features.0": 20, "features.3": 50, "classifier": 10}
    write_report(r, tmp_path)
    assert (tmp_path / "channel_widths.png").stat().st_size > 1000
    assert "channel_widths.png" in render_markdown(r)


def test_ratios_with_no_variants():
    assert compute_ratios([]) == []


def test_a_partial_mac_count_is_shown_as_a_lower_bound_and_gives_no_ratio(report):
    """Layers whose shapes could not be inferred are left out of MACs: the count is then a lower bound,
    shown as such, and no MACs ratio is computed from it."""
    partial = json.loads(json.dumps(report))
    partial["variants"][1]["model"]["uncounted"] = ["/layer/Conv"]
    ratios = {x["name"]: x for x in compute_ratios(partial["variants"])}
    assert ratios["small.onnx"]["macs_ratio"] is None and ratios["small.onnx"]["params_ratio"] == 1.0
    partial["ratios"] = list(ratios.values())
    assert "≥ 6,952 (1 layers not counted)" in render_markdown(partial)


def test_a_broken_model_is_never_the_faster_one(report):
    """Its timings stay in its row; a ratio or a fastest runtime made from them ranked a NaN model."""
    from compress.runtime.report import compute_ratios, fastest_runtimes

    first = json.loads(to_json(report))["variants"][0]
    variants = [first, {**json.loads(json.dumps(first)), "name": "broken"}]
    assert compute_ratios(variants)[1]["speedup_p50"] == {"1": 1.0, "3": 1.0}
    variants[1]["nonfinite_outputs"] = ["logits"]
    for row in variants[1]["latency"]:
        row["end_to_end"]["p50_ms"] = 1e-6  # the fastest by far, if its timings were compared
    assert compute_ratios(variants)[1]["speedup_p50"] == {"1": None, "3": None}
    for v, backend in zip(variants, ("ort-cpu", "openvino")):
        v.update(artifact_name="same", backend=backend)
    assert [f["backend"] for f in fastest_runtimes(variants, [1, 3])] == ["ort-cpu", "ort-cpu"]


def test_artifacts_that_take_other_inputs_are_named():
    from compress.runtime.report import other_inputs

    variants = [{"name": "a", "input_shape": [3, 32, 32]}, {"name": "b", "input_shape": [3, 64, 64]},
                {"name": "c", "input_shape": [3, 32, 32]}, {"name": "d", "input_shape": None}]
    assert other_inputs(variants) == ["b takes [3, 64, 64] inputs and a [3, 32, 32]: their ratios compare different work"]


def test_a_line_break_in_a_name_stays_inside_its_markdown_line(report):
    broken = json.loads(to_json(report))
    broken["variants"][0]["name"] = "evil\n# Injected heading"
    assert "\n# Injected heading" not in render_markdown(broken)
