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


@pytest.mark.parametrize("others", [[], ["vgg.onnx"]], ids=["alone", "beside-a-good-one"])
def test_a_missing_artifact_is_refused_in_one_line_before_any_work(work, others, monkeypatch):
    """A path that is not there is bad input, not a row to measure: it used to print a report of one
    failed row (or, beside a good file, exit 0 with it)."""
    monkeypatch.chdir(work)
    before = snapshot(work)
    assert_refused(invoke(["bench", *others, "none.onnx", *FAST, "--report", "rep"]),
                   "none.onnx: no such file or model directory")
    assert snapshot(work) == before


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
    (work / "b.onnx").write_bytes(b"")
    nothing_measured(work, [work / "a.onnx", work / "b.onnx"])


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


# --- non-finite outputs are a broken model, not an accuracy ---------------------------------------------------

def _save(model, path):
    import onnx

    onnx.save(model, str(path))
    return path


def _balanced_data(n=20):
    """Labels 0..9 in turn: argmax over NaN logits (always class 0) would score exactly 10.00%."""
    import numpy as np
    from onnx_builders import CLASSES

    from compress.runtime.bench import EvalData

    rng = np.random.default_rng(0)
    return EvalData(rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), np.arange(n) % 10, CLASSES, "balanced")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_outputs_give_no_accuracy_and_no_ok(tmp_path, value):
    from onnx_builders import tiny_cnn, with_nonfinite_weights

    from compress.runtime.bench import BenchSettings, run_benchmark

    path = _save(with_nonfinite_weights(tiny_cnn(), value=value), tmp_path / "broken.onnx")
    report = run_benchmark([path], BenchSettings(batches=(1,), iters=2, warmup=0, power="none"),
                           data=_balanced_data(), log=lambda m: None)
    v = report["variants"][0]
    assert v["status"] != "ok" and v["accuracy"] is None
    assert any("NaN or infinite" in w and "no accuracy" in w for w in v["warnings"])


def test_bench_cli_flags_nonfinite_outputs_without_data(tmp_path):
    from onnx_builders import tiny_cnn, with_nonfinite_weights

    path = _save(with_nonfinite_weights(tiny_cnn()), tmp_path / "nan.onnx")
    result = invoke(["bench", path, *FAST, "--json"])
    v = json.loads(result.stdout)["variants"][0]
    assert v["status"] == "partial" and v["nonfinite_outputs"] == ["logits"]
    assert "NaN or infinite" in result.stderr


def test_torch_backend_with_overflowing_logits_reports_no_accuracy(tmp_path):
    """Finite weights whose logits overflow float32: the torch reference must not score them either."""
    import torch
    from tests_support import make_image_folder

    from safetensors.torch import load_file, save_file

    # save_model_dir refuses to write such a network (its outputs on a random input are not finite), so the
    # directory is a stranger's: its weights file rewritten after the fact.
    d = make_model_dir(tmp_path / "big")
    state = load_file(str(d / "model.safetensors"))
    state["classifier.weight"] = torch.full_like(state["classifier.weight"], 3e38)  # finite, logits beyond float32
    save_file(state, str(d / "model.safetensors"))
    data = make_image_folder(tmp_path / "data", [f"c{i}" for i in range(10)], per_class=1, size=32)
    result = invoke(["bench", tmp_path / "big", "--backend", "torch", *FAST, "--data", data, "--json"])
    v = json.loads(result.stdout)["variants"][0]
    assert v["status"] != "ok" and v["accuracy"] is None, v
    assert any("NaN or infinite" in w for w in v["warnings"])


# --- options mean what they say, within bounds ----------------------------------------------------------------

@pytest.mark.parametrize("backend,needle", [("", "empty backend name"), (" ", "empty backend name"),
                                            ("ort-cpu,,openvino", "empty backend name"),
                                            ("ort-cpu,ort-cpu", "'ort-cpu' is given twice"),
                                            ("tflite", "unknown backend 'tflite'")])
def test_backend_names_are_refused_not_guessed(work, backend, needle):
    before = snapshot(work)
    assert_refused(invoke(["bench", work / "vgg.onnx", *FAST, "--backend", backend]), needle, usage=True)
    assert snapshot(work) == before


def test_a_backend_given_twice_across_options_is_refused(work):
    assert_refused(invoke(["bench", work / "vgg.onnx", *FAST, "--backend", "ort-cpu", "--backend", "ort-cpu"]),
                   "given twice", usage=True)


@pytest.mark.parametrize("args,needle", [(["--threads", "1000000"], "between 1 and 1024"),
                                         (["--streams", "1000000"], "between 1 and 1024"),
                                         (["--iters", str(10**12)], "between 2 and 1000000"),
                                         (["--batch", str(2**40)], "between 1 and 65536"),
                                         (["--device", "1000000"], "between 0 and 255")])
def test_counts_are_bounded_before_anything_runs(work, args, needle):
    """The bound lives in BenchSettings (the library); the CLI only passes the number through. In a child
    process: without the bound, a trillion iterations would run for days."""
    before = snapshot(work)
    base = ["--iters", "2", "--warmup", "0"] + ([] if "--batch" in args else ["--batch", "1"])
    result = _cli(["bench", work / "vgg.onnx", *base, *args], work)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert needle in lines[0] and args[0].lstrip("-") in lines[0], lines[0]
    assert snapshot(work) == before


# --- a failed --report leaves no partial report ---------------------------------------------------------------

def _old_report(out):
    out.mkdir()
    (out / "report.json").write_text('{"old": true}')
    (out / "report.md").write_text("# old")


def test_a_full_disk_leaves_the_old_report_and_names_the_problem(work, monkeypatch):
    import errno
    import os

    out = work / "r"
    _old_report(out)
    real = os.write

    def full(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(out)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", full)
    before = snapshot(out)
    line = assert_refused(invoke(["bench", work / "vgg.onnx", *FAST, "--report", out]), "disk full while writing")
    assert str(out) in line
    assert snapshot(out) == before


def test_a_file_size_limit_mid_report_leaves_no_lone_report_md(work):
    """A real failed write, from the kernel: report.md fits under the limit, report.json does not."""
    out = work / "r"
    result = _cli(["bench", work / "vgg.onnx", *FAST, "--no-plots", "--report", out], work, fsize=3000)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "file too large while writing" in lines[0] and "Traceback" not in result.stderr
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def _make_read_only(path):
    """chmod for a normal user; root ignores permissions, so the immutable attribute (chattr +i) instead."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("running as root without chattr +i: no way to make a directory unwritable here")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_report_directory_is_named(work):
    out = work / "r"
    _old_report(out)
    before = snapshot(out)
    undo = _make_read_only(out)
    try:
        line = assert_refused(invoke(["bench", work / "vgg.onnx", *FAST, "--report", out]), "not writable")
    finally:
        undo()
    assert str(out) in line and snapshot(out) == before


# --- files the runtime reads: regular files only, sizes and depth bounded -------------------------------------

def _cli(args, cwd, timeout=120, fsize=None):
    """The CLI in a child process with a memory cap and a timeout: a regression that reads /dev/zero, blocks
    on a FIFO or loops for days must fail the test, not the machine. `fsize` caps the size of files written."""
    import resource
    import signal
    import subprocess
    import sys

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (8 * 1024**3, 8 * 1024**3))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "compress.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limits, cwd=cwd)


def _bench_subprocess(args, tmp_path):
    return _cli(["bench", *args, *FAST, "--json"], tmp_path)


@pytest.mark.parametrize("kind,words", [("fifo", "is a FIFO (named pipe), not a regular file"),
                                        ("device", "is a character device, not a regular file")])
def test_non_regular_artifacts_are_refused_without_reading(tmp_path, kind, words):
    import os

    path = tmp_path / "m.onnx"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    result = _bench_subprocess([path], tmp_path)
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and words in result.stderr and "Traceback" not in result.stderr


def test_a_fifo_engine_is_refused_before_any_backend_reads_it(tmp_path):
    import os

    from compress.runtime.bench import BenchSettings, bench_variant

    os.mkfifo(tmp_path / "m.engine")
    v = bench_variant(tmp_path / "m.engine", BenchSettings(batches=(1,), iters=2), log=lambda m: None)
    assert v["status"] == "failed" and "is a FIFO" in v["error"]


def test_deep_json_in_onnx_metadata_is_one_line(tmp_path):
    from onnx_builders import tiny_cnn, with_metadata

    path = _save(with_metadata(tiny_cnn(), classes="[" * 100_000 + "]" * 100_000), tmp_path / "deep.onnx")
    result = _bench_subprocess([path], tmp_path)
    v = json.loads(result.stdout)["variants"][0]
    assert v["status"] == "failed" and "compress.classes nests JSON deeper than" in v["error"], v["error"]


@pytest.mark.parametrize("content,words", [("[" * 100_000 + "]" * 100_000, "deeper than 64 levels"),
                                           (b'{"accuracy": "caf\xe9"}', "not UTF-8"),
                                           (None, "above the bound of 64.0 MiB")])
def test_a_hostile_model_json_beside_the_artifact_is_a_warning(tmp_path, content, words):
    from onnx_builders import tiny_cnn

    path = _save(tiny_cnn(), tmp_path / "m.onnx")
    if content is None:
        with open(tmp_path / "model.json", "wb") as fh:
            fh.truncate(100 * 1024**2)  # sparse: 100 MiB that take no disk
    else:
        (tmp_path / "model.json").write_bytes(content.encode() if isinstance(content, str) else content)
    result = _bench_subprocess([path], tmp_path)
    assert result.returncode == 0, result.stderr
    v = json.loads(result.stdout)["variants"][0]
    assert v["status"] == "ok" and any(words in w for w in v["warnings"]), v["warnings"]


def test_a_deep_report_is_refused_in_one_line(tmp_path):
    from compress.runtime.report import load_report

    (tmp_path / "report.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="deeper than 64 levels"):
        load_report(tmp_path)


def test_eval_of_an_onnx_file_with_nonfinite_logits_is_refused(tmp_path, monkeypatch):
    """`compress eval X.onnx` measures through the runtime's accuracy: no 10.00% from NaN logits."""
    from onnx_builders import CLASSES, tiny_cnn, with_nonfinite_weights
    from tests_support import make_image_folder

    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    data = make_image_folder(tmp_path / "data", CLASSES, per_class=1, size=8)
    path = _save(with_nonfinite_weights(tiny_cnn()), tmp_path / "nan.onnx")
    assert_refused(invoke(["eval", path, "--data", data]), "nan.onnx outputs NaN or infinite logits")
