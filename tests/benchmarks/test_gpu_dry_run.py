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
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - t0


@pytest.mark.slow
def test_the_dry_run_does_every_step_and_writes_what_can_come_back(tmp_path):
    from compress.runtime.report import load_report, render_markdown

    proc, seconds = _run(["--dry-run", "--out", str(tmp_path / "out"), "--export", str(tmp_path / "back")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    steps = results["steps"]
    assert {name: e["status"] for name, e in steps.items()} == {
        "env": "ok", "data": "ok", "throughput": "ok", "row": "ok", "deploy": "ok", "ddp": "ok"}, steps
    # What comes back from the device: at most 8 files, each under 16 MiB, and nothing deeper.
    back = sorted(p for p in (tmp_path / "back").rglob("*"))
    assert 5 <= len(back) <= MAX_FILES and all(p.is_file() and p.stat().st_size < MAX_BYTES for p in back), back

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
    assert seconds < 60, f"the dry run took {seconds:.0f} s"


def test_a_step_that_cannot_finish_in_the_time_left_is_not_started(tmp_path):
    # 40 s: less than the torchrun step's 45 s, and less than the row's minimum beside that step's reserve.
    proc, _ = _run(["--dry-run", "--out", str(tmp_path / "out"), "--deadline-s", "40", "--steps", "row,ddp"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads((tmp_path / "out" / "results.json").read_text())["steps"]
    for name in ("row", "ddp"):
        assert steps[name]["status"] == "skipped" and "left in the window" in steps[name]["reason"], steps[name]
    assert not (tmp_path / "out" / "work" / "ddp").exists() and not (tmp_path / "out" / "work" / "baseline").exists()
    assert "| ddp | skipped |" in (tmp_path / "out" / "summary.md").read_text()


def test_resume_keeps_the_steps_already_done(tmp_path):
    out = tmp_path / "out"
    first, _ = _run(["--dry-run", "--out", str(out), "--steps", "env"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    started = json.loads((out / "results.json").read_text())["steps"]["env"]["started"]
    again, _ = _run(["--dry-run", "--out", str(out), "--steps", "env", "--resume"], tmp_path)
    assert again.returncode == 0 and "done in an earlier command, kept" in again.stdout
    assert json.loads((out / "results.json").read_text())["steps"]["env"]["started"] == started
