"""Hostile inputs for `compress bench`: it exits non-zero when nothing was measured, refuses absurd
numbers in one line, and leaves the artifacts it was given unchanged."""

import json
import shutil

import pytest

from hostile_support import assert_refused, export_onnx_file, invoke, make_model_dir, snapshot

FAST = ["--iters", "2", "--batch", "1", "--warmup", "0"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    export_onnx_file(make_model_dir(root / "vgg"), root / "vgg.onnx")
    return root


@pytest.fixture
def work(tmp_path, built):
    shutil.copytree(built, tmp_path / "w")
    return tmp_path / "w"


def nothing_measured(work, artifacts, *args):
    before = snapshot(work)
    result = invoke(["bench", *artifacts, *FAST, "--json", *args])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [v["status"] for v in report["variants"]] == ["failed"] * len(artifacts)
    assert snapshot(work) == before
    return report


def test_a_missing_artifact_measures_nothing(work):
    report = nothing_measured(work, [work / "none.onnx"])
    assert "not found" in report["variants"][0]["error"]


@pytest.mark.parametrize("content", [b"", b"junk" * 10])
def test_empty_or_junk_onnx_measures_nothing(work, content):
    (work / "bad.onnx").write_bytes(content)
    report = nothing_measured(work, [work / "bad.onnx"])
    assert "bad.onnx" in report["variants"][0]["error"] and "\n" not in report["variants"][0]["error"]


def test_model_directory_with_broken_weights_measures_nothing(work):
    (work / "vgg" / "model.safetensors").write_bytes(b"\0" * 64)
    report = nothing_measured(work, [work / "vgg"])
    assert "model.safetensors" in report["variants"][0]["error"]


def test_every_artifact_failing_is_an_error_even_with_several(work):
    (work / "a.onnx").write_bytes(b"x")
    nothing_measured(work, [work / "a.onnx", work / "none.onnx"])


def test_one_good_artifact_is_enough(work):
    (work / "a.onnx").write_bytes(b"x")
    result = invoke(["bench", work / "a.onnx", work / "vgg.onnx", *FAST, "--json"])
    assert result.exit_code == 0, result.output
    assert [v["status"] for v in json.loads(result.stdout)["variants"]] == ["failed", "ok"]


@pytest.mark.parametrize("args,needle", [(["--batch", "0"], "--batch"), (["--batch", "1,x"], "--batch"),
                                         (["--iters", "1"], "--iters"), (["--threads", "0"], "--threads"),
                                         (["--warmup", "-1"], "--warmup"),
                                         (["--model-dir", "no-equals-sign"], "--model-dir"),
                                         (["--report", "vgg.onnx"], "--report")])
def test_absurd_options_are_refused_in_one_line(work, args, needle, monkeypatch):
    monkeypatch.chdir(work)
    before = snapshot(work)
    assert_refused(invoke(["bench", "vgg.onnx", *args]), needle, usage=True)
    assert snapshot(work) == before


def test_non_finite_duration_is_refused(work):
    # Only NaN is tried: with --duration inf today's bench would time forever.
    assert_refused(invoke(["bench", work / "vgg.onnx", "--batch", "1", "--warmup", "0", "--duration", "nan"]),
                   "--duration", usage=True)


def test_report_into_an_input_model_directory_is_refused(work):
    before = snapshot(work)
    assert_refused(invoke(["bench", work / "vgg", "--iters", "2", "--batch", "1", "--report", work / "vgg"]),
                   "--report")
    assert snapshot(work) == before


def test_report_files_get_the_umask_permissions(work):
    import os

    onnx_path = export_onnx_file(work / "vgg", work / "vgg.onnx")
    old = os.umask(0o022)
    try:
        result = invoke(["bench", onnx_path, "--iters", "2", "--warmup", "0", "--batch", "1", "--no-plots",
                         "--report", work / "r"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for name in ("report.json", "report.md"):
        assert (work / "r" / name).stat().st_mode & 0o777 == 0o644
