"""`compress bench` end to end on tiny artifacts: JSON on stdout, report files, failed rows, option errors."""

import json

import onnx
import pytest
from click.testing import CliRunner
from onnx_builders import tiny_cnn

from compress.cli import main

FAST = ["--iters", "3", "--warmup", "1"]


def _invoke(args):
    return CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)


def test_json_is_the_only_thing_on_stdout(tiny_onnx):
    result = _invoke([str(tiny_onnx), "--batch", "1,2", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "compress.report/1"
    assert [r["batch"] for r in report["variants"][0]["latency"]] == [1, 2]
    assert report["command"].startswith("compress ")
    assert "batch 1: p50" in result.stderr  # progress goes to stderr


def test_report_directory_with_a_broken_artifact(tiny_onnx, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(tiny_onnx.read_bytes()[:300])
    out = tmp_path / "report"
    result = _invoke([str(tiny_onnx), str(cut), "--batch", "1", *FAST, "--report", str(out)])
    assert result.exit_code == 0, result.output
    assert "| cut.onnx | failed |" in result.stdout
    saved = json.loads((out / "report.json").read_text())
    assert [v["status"] for v in saved["variants"]] == ["ok", "failed"]
    assert (out / "report.md").is_file() and (out / "latency_vs_batch.png").is_file()


def test_all_variants_failing_exits_non_zero(tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(b"\x08\x07garbage")
    result = _invoke([str(cut), "--batch", "1", *FAST])
    assert result.exit_code == 1


@pytest.mark.parametrize("args,message", [
    (["--batch", "1,x"], "comma-separated"),
    (["--batch", "0"], "positive"),
    (["--iters", "5", "--duration", "1"], "not both"),
    (["--no-plots"], "--report"),
    (["--model-dir", "nodir"], "ARTIFACT=MODEL_DIR"),
    (["--paired", "6"], "give at least two"),
    (["--paired", "5"], "--paired"),
    (["--paired", "10001"], "--paired"),
])
def test_option_errors(tiny_onnx, args, message):
    result = CliRunner().invoke(main, ["bench", str(tiny_onnx), *args])
    assert result.exit_code == 2 and message in result.output


def test_unavailable_backend_is_one_line(tiny_onnx):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    result = CliRunner().invoke(main, ["bench", str(tiny_onnx), "--backend", "ort-cuda"])
    assert result.exit_code == 2
    assert "CUDAExecutionProvider" in result.output and "Traceback" not in result.output


def test_model_directory_is_exported_for_onnx_runtime_with_accuracy(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch", reason="the torch backend needs PyTorch (runtime/ installs without it)")
    # tests_support imports torch: only after the skip above.
    from tests_support import make_image_folder

    from compress.artifact import save_model_dir
    from compress.models import create_model

    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    classes = [f"k{i}" for i in range(10)]
    data = make_image_folder(tmp_path / "data", classes, per_class=2, size=32)
    torch.manual_seed(0)
    model_dir = tmp_path / "pruned"
    save_model_dir(create_model("vgg11", num_classes=10, width=0.125), model_dir,
                   {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125}, "classes": classes,
                    "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    result = _invoke([str(model_dir), "--batch", "2", *FAST, "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    v = json.loads(result.stdout)["variants"][0]
    assert v["status"] == "ok" and v["artifact"] == str(model_dir) and "temporary ONNX" in v["note"]
    assert v["accuracy"]["images"] == 20
    assert v["widths"]["features.0"] == 8  # read from the model directory's model.json
    meta = json.loads((model_dir / "model.json").read_text())
    assert (v["model"]["params"], v["model"]["macs"]) == (meta["params"], meta["macs"])


def test_static_onnx_rows(tmp_path):
    path = tmp_path / "static.onnx"
    onnx.save(tiny_cnn(batch=2), str(path))
    result = _invoke([str(path), "--batch", "1,2", *FAST, "--json"])
    v = json.loads(result.stdout)["variants"][0]
    assert v["status"] == "partial" and [r["status"] for r in v["latency"]] == ["failed", "ok"]


def test_nothing_measured_exits_non_zero_even_when_a_variant_loaded(tmp_path):
    """A static-batch file asked for another batch size loads, but measures nothing: exit status 1."""
    path = tmp_path / "static.onnx"
    onnx.save(tiny_cnn(batch=2), str(path))
    result = _invoke([str(path), "--batch", "1,4", *FAST])
    assert result.exit_code == 1
    assert "nothing was measured" in result.stderr


def test_several_backends_side_by_side(tiny_onnx):
    pytest.importorskip("openvino", reason="OpenVINO is not installed")
    result = _invoke([str(tiny_onnx), "--backend", "ort-cpu,openvino", "--batch", "1", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [v["backend"] for v in report["variants"]] == ["ort-cpu", "openvino"]
    assert report["fastest"][0]["backend"] in ("ort-cpu", "openvino")
    assert all(v["ran_at"] == "fp32" for v in report["variants"])


def test_unknown_backend_is_a_usage_error(tiny_onnx):
    result = CliRunner().invoke(main, ["bench", str(tiny_onnx), "--backend", "ort-cpu,tvm"])
    assert result.exit_code == 2 and "unknown backend 'tvm'" in result.output


def test_paired_times_the_artifacts_in_turns_against_the_first(tiny_onnx, tmp_path):
    other = tmp_path / "other.onnx"
    onnx.save(tiny_cnn(seed=1), str(other))
    report_dir = tmp_path / "report"
    result = _invoke([str(tiny_onnx), str(other), "--batch", "1,2", *FAST, "--paired", "6", "--report",
                      str(report_dir), "--no-plots"])
    assert result.exit_code == 0, result.output
    report = json.loads((report_dir / "report.json").read_text())
    assert [(s["backend"], s["batch"]) for s in report["paired"]] == [("ort-cpu", 1), ("ort-cpu", 2)]
    for section in report["paired"]:
        assert section["reference"] == "tiny.onnx" and section["blocks"] == 6 and section["iters"] >= 20
        first, second = section["rows"]
        assert first["name"] == "tiny.onnx" and first["ratio_median"] == 1.0 and first["verdict"] == "reference"
        assert second["name"] == "other.onnx" and second["median_ms"] > 0
        assert second["ratio_ci95"][0] <= second["ratio_median"] <= second["ratio_ci95"][1]
        assert second["verdict"] in ("faster", "slower", "level")
    markdown = (report_dir / "report.md").read_text()
    assert "## Paired comparison" in markdown and "ort-cpu, batch 2: 6 blocks" in markdown
    assert "## Paired comparison" in result.stdout  # the printed summary carries it too


def test_paired_leaves_out_a_batch_the_reference_failed_and_never_hides_the_rows(tiny_onnx, tmp_path):
    static = tmp_path / "static.onnx"
    onnx.save(tiny_cnn(batch=1), str(static))  # a static batch of 1: batch 2 fails for it
    result = _invoke([str(static), str(tiny_onnx), "--batch", "1,2", *FAST, "--paired", "6", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["batch"] for s in report["paired"]] == [1]  # batch 2: the reference has no row to compare with
    assert "paired comparison on ort-cpu at batch 2 not made: the first artifact has no measurement there" \
        in report["warnings"]


def test_paired_keeps_one_row_per_artifact_given_twice_and_names_a_failed_reference(tiny_onnx, tmp_path):
    result = _invoke([str(tiny_onnx), str(tiny_onnx), "--batch", "1", *FAST, "--paired", "6", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["paired"][0]["rows"]
    assert len({r["name"] for r in rows}) == 2 and rows[1]["verdict"] in ("faster", "slower", "level")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    result = _invoke([str(broken), str(tiny_onnx), "--batch", "1", *FAST, "--paired", "6", "--json"])
    report = json.loads(result.stdout)
    assert report["paired"] == []
    assert any(w.startswith("paired comparison on ort-cpu not made: the first artifact") for w in report["warnings"])


def test_a_model_json_of_other_weights_is_not_reported_for_the_file(tmp_path):
    """`--model-dir e1.onnx=m1`, or a model.json beside the file, gave e1.onnx the widths and accuracy of an
    unpruned model it was not made from, without a word."""
    pytest.importorskip("torch", reason="exporting needs PyTorch (runtime/ installs without it)")
    import shutil

    from compress.artifact import save_model_dir
    from compress.models import create_model
    from compress.stages.export import export

    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125}, "classes": [f"k{i}" for i in range(10)],
            "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "accuracy": 0.5}
    for name, width in (("narrow", 0.0625), ("wide", 0.125)):
        save_model_dir(create_model("vgg11", num_classes=10, width=width), tmp_path / name,
                       {**meta, "arch_kwargs": {"num_classes": 10, "width": width}})
    export(tmp_path / "narrow", tmp_path / "narrow.onnx", log=lambda _m: None)
    shutil.copy(tmp_path / "narrow.onnx", tmp_path / "narrow" / "model.onnx")
    shutil.copytree(tmp_path / "wide", tmp_path / "wide-copy")
    shutil.copy(tmp_path / "narrow.onnx", tmp_path / "wide-copy" / "model.onnx")

    own = json.loads(_invoke([str(tmp_path / "narrow.onnx"), "--model-dir", f"{tmp_path / 'narrow.onnx'}="
                              f"{tmp_path / 'narrow'}", "--batch", "1", *FAST, "--json"]).stdout)["variants"][0]
    assert own["widths"]["features.0"] == 4 and own["reference_accuracy"] == 0.5
    assert json.loads(_invoke([str(tmp_path / "narrow" / "model.onnx"), "--batch", "1", *FAST, "--json"])
                      .stdout)["variants"][0]["widths"]["features.0"] == 4
    for args in ([str(tmp_path / "narrow.onnx"), "--model-dir", f"{tmp_path / 'narrow.onnx'}={tmp_path / 'wide'}"],
                 [str(tmp_path / "wide-copy" / "model.onnx")]):
        v = json.loads(_invoke([*args, "--batch", "1", *FAST, "--json"]).stdout)["variants"][0]
        assert v["status"] == "ok" and v.get("widths") is None and v.get("reference_accuracy") is None
        assert any("describes other weights" in w for w in v["warnings"])


@pytest.mark.parametrize("item, message", [("other.onnx={model}", "is not one of the artifacts"),
                                           ("{artifact}={empty}", "has no model.json")])
def test_model_dir_keys_name_an_artifact_and_a_model_directory(tiny_onnx, tmp_path, item, message):
    (tmp_path / "empty").mkdir()
    item = item.format(model=tmp_path, artifact=tiny_onnx, empty=tmp_path / "empty")
    result = CliRunner().invoke(main, ["bench", str(tiny_onnx), "--model-dir", item, *FAST])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("args, message", [(["--test-limit", "3"], "--test-limit only applies with --data"),
                                           (["--device", "1"], "--device only applies with a GPU backend"),
                                           (["--backend", "ort-cpu,openvino", "--device", "0"], "--device only")])
def test_options_that_would_do_nothing_are_refused(tiny_onnx, args, message):
    """bench --test-limit without --data, and a CUDA --device for CPU runtimes, were silently ignored."""
    result = CliRunner().invoke(main, ["bench", str(tiny_onnx), *args, *FAST])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_report_directory_that_cannot_be_written_is_refused_before_measuring(tiny_onnx, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    result = _invoke([str(tiny_onnx), "--batch", "1", *FAST, "--report", str(tmp_path / "file.txt" / "rep")])
    assert result.exit_code == 2 and "Error: cannot write the report into" in result.stderr
    assert "not a directory" in result.stderr and "[1/1]" not in result.stderr  # nothing was measured


def test_a_report_write_that_fails_after_measuring_still_prints_the_results(tiny_onnx, tmp_path, monkeypatch):
    """The measurement was lost: the error came after it, and nothing was printed."""
    import errno

    import compress.runtime.report as report_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report_module, "write_files_into", full)
    result = _invoke([str(tiny_onnx), "--batch", "1", *FAST, "--report", str(tmp_path / "rep"), "--json"])
    assert result.exit_code == 2 and "disk full" in result.stderr
    assert json.loads(result.stdout)["variants"][0]["status"] == "ok"


def test_an_fp16_file_is_matched_to_the_weights_it_came_from(tmp_path):
    """An FP16 file records the FP32 file's hash: a model.json beside it could not be matched, and was
    reported anyway; now the weights' hash is carried over and checked."""
    pytest.importorskip("torch", reason="exporting needs PyTorch (runtime/ installs without it)")
    import shutil

    from compress.artifact import save_model_dir
    from compress.exporting.fp16 import convert_fp16
    from compress.models import create_model
    from compress.stages.export import export

    meta = {"arch": "vgg11", "classes": [f"k{i}" for i in range(10)], "input_size": [3, 32, 32],
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "accuracy": 0.5}
    for name, width in (("narrow", 0.0625), ("wide", 0.125)):
        save_model_dir(create_model("vgg11", num_classes=10, width=width), tmp_path / name,
                       {**meta, "arch_kwargs": {"num_classes": 10, "width": width}})
    export(tmp_path / "narrow", tmp_path / "narrow.onnx", log=lambda _m: None)
    convert_fp16(tmp_path / "narrow.onnx", tmp_path / "narrow" / "half.onnx")
    shutil.copy(tmp_path / "narrow" / "half.onnx", tmp_path / "wide" / "half.onnx")
    own = json.loads(_invoke([str(tmp_path / "narrow" / "half.onnx"), "--batch", "1", *FAST, "--json"]).stdout)
    assert own["variants"][0]["widths"]["features.0"] == 4 and own["variants"][0]["reference_accuracy"] == 0.5
    other = json.loads(_invoke([str(tmp_path / "wide" / "half.onnx"), "--batch", "1", *FAST, "--json"]).stdout)
    assert other["variants"][0]["widths"] is None
    assert any("describes other weights" in w for w in other["variants"][0]["warnings"])
