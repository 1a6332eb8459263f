"""benchmarks/gpu/run.py --dry-run: every step of the GPU window at toy sizes on the CPU, through the same code."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.py"
MAX_FILES, MAX_BYTES = 8, 16 * 2 ** 20


def _run(args, cwd, timeout=300):
    """(process, wall seconds, CPU seconds of it and its children)."""
    import resource

    t0, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return proc, time.monotonic() - t0, cpu


@pytest.mark.slow
def test_the_dry_run_does_every_step_and_writes_what_can_come_back(tmp_path):
    from compress.runtime.report import load_report, render_markdown

    proc, seconds, cpu = _run(["--dry-run", "--out", str(tmp_path / "out"), "--export", str(tmp_path / "back")],
                              tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    steps = results["steps"]
    assert {name: e["status"] for name, e in steps.items()} == {
        "env": "ok", "data": "ok", "throughput": "ok", "row": "ok", "deploy": "ok", "ddp": "ok"}, steps
    # What comes back from the device: at most 8 files, each under 16 MiB, and nothing deeper.
    back = sorted(p for p in (tmp_path / "back").rglob("*"))
    assert 5 <= len(back) <= MAX_FILES and all(p.is_file() and p.stat().st_size < MAX_BYTES for p in back), back

    assert set(steps["env"]["result"]["cpu_bf16"]) == {"get_capabilities", "native"}
    throughput = steps["throughput"]["result"]
    ran = {r["name"]: r for r in throughput["variants"] if r["status"] == "ok"}
    assert "fit() bf16 channels_last b64" in ran and "plain bf16 channels_last b64" in ran
    assert all(r["img_per_s"] > 0 for r in ran.values())
    skipped = {r["name"]: r["reason"] for r in throughput["variants"] if r["status"] == "skipped"}
    assert "CUDA graphs need a CUDA GPU" in skipped["plain bf16 channels_last CUDA graph b64"]

    row = steps["row"]["result"]
    assert row["epochs"] == 1 and "longest schedule that fit" in row["schedule"]
    assert set(row["stages"]) == {"baseline", "sparse", "pruned", "finetuned"}
    assert row["stages"]["finetuned"]["params"] < row["stages"]["baseline"]["params"]

    report = load_report(tmp_path / "back" / "report.json")  # the harness's own reader and renderer
    assert "# Benchmark report" in render_markdown(report)
    names = {v["name"] for v in report["variants"]}
    assert {"vgg19 [eager fp32]", "vgg19-slim70-r8 [eager fp32]"} <= names
    pair = next(p for p in report["gpu_pairs"] if p["network"] == "vgg19-slim70-r8")
    assert pair["macs_ratio"] > 1.5 and pair["speedup_compute_p50"] > 0
    assert any("CUDA graphs need a CUDA GPU" in s["reason"] for s in report["skipped"])

    assert steps["ddp"]["result"]["backend"] == "gloo" and steps["ddp"]["result"]["world_size"] == 1

    summary = (tmp_path / "back" / "summary.md").read_text()
    for gpu_only in ("CUDA graphs", "NVML", "NCCL", "inductor"):
        assert gpu_only in summary.split("## Not done on this machine")[1], gpu_only
    # On a machine shared with other work the wall time grows with the load: the CPU time says by how much.
    assert seconds < 60, f"the dry run took {seconds:.0f} s ({cpu:.0f} s of CPU)"


def test_a_step_that_cannot_finish_in_the_time_left_is_not_started(tmp_path):
    # 40 s: less than the torchrun step's 45 s, and less than the row's minimum beside that step's reserve.
    proc, _, _ = _run(["--dry-run", "--out", str(tmp_path / "out"), "--deadline-s", "40", "--steps", "row,ddp"],
                      tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads((tmp_path / "out" / "results.json").read_text())["steps"]
    for name in ("row", "ddp"):
        assert steps[name]["status"] == "skipped" and "left in the window" in steps[name]["reason"], steps[name]
    assert not (tmp_path / "out" / "work" / "ddp").exists() and not (tmp_path / "out" / "work" / "baseline").exists()
    assert "| ddp | skipped |" in (tmp_path / "out" / "summary.md").read_text()


def test_resume_keeps_the_steps_already_done(tmp_path):
    out = tmp_path / "out"
    first, _, _ = _run(["--dry-run", "--out", str(out), "--steps", "env"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    started = json.loads((out / "results.json").read_text())["steps"]["env"]["started"]
    again, _, _ = _run(["--dry-run", "--out", str(out), "--steps", "env", "--resume"], tmp_path)
    assert again.returncode == 0 and "done in an earlier command, kept" in again.stdout
    assert json.loads((out / "results.json").read_text())["steps"]["env"]["started"] == started


def _window_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_window", ROOT / "benchmarks" / "gpu" / "gpu_window.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_sends_at_most_eight_files_under_the_size_limit_and_keeps_a_long_logs_end(tmp_path):
    w = _window_module()
    out = tmp_path / "out"
    out.mkdir()
    names = [f"f{i}.json" for i in range(9)]
    for name in names:
        (out / name).write_text("{}")
    (out / "run.log").write_bytes(b"a" * (w.MAX_FILE_BYTES + 1000) + b"\nthe last line\n")
    left_out = w.export(out, ["run.log", *names], tmp_path / "back")
    sent = sorted(p.name for p in (tmp_path / "back").iterdir())
    assert len(sent) == w.MAX_FILES and "run.log" in sent and len(left_out) == 2
    log = (tmp_path / "back" / "run.log").read_bytes()
    assert len(log) <= w.MAX_FILE_BYTES + 100 and log.endswith(b"the last line\n")


def test_a_guard_stops_an_overrunning_block_and_re_arms_the_outer_one():
    w = _window_module()
    window = w.Window(100, margin_s=0)
    with pytest.raises(w.StepOverrun):
        with window.guard(1.0):
            with window.guard(30.0):  # an inner guard never outlasts the outer one
                time.sleep(5)
    with pytest.raises(w.StepOverrun):
        with window.guard(1.5):
            with window.guard(0.5):
                pass  # the inner block ends in time
            time.sleep(5)  # the outer alarm still fires
    assert window.admits(50)[0] and not window.admits(500)[0]


def test_device_sh_import_check_passes_where_the_project_is_installed(tmp_path):
    # device.sh ends the window at once when this check fails; it once named a module that does not exist.
    import re

    text = (ROOT / "benchmarks" / "gpu" / "device.sh").read_text()
    checks = re.findall(r'^"\$PY" -c "([^"]+)" \|\| exit 2$', text, flags=re.M)
    assert len(checks) == 1, checks
    if "torch_pruning" in checks[0]:
        pytest.importorskip("torch_pruning")
    proc = subprocess.run([sys.executable, "-c", checks[0]], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
