"""The scripts in examples/ run exactly as written, at a tiny scale."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests_support import make_image_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_slim_resnet18_example(tmp_path):
    data = make_image_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=6, size=72)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "slim_resnet18.py"), "--data", str(data),
                           "--out", str(tmp_path / "run"), "--epochs", "1", "--steps", "2", "--batch-size", "8",
                           "--workers", "0"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["arch"] == "resnet18" and meta["classes"] == ["a", "b", "c"]
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["channels_after"] < plan["channels_before"]
    assert (tmp_path / "run" / "model.onnx").stat().st_size > 0
    assert "parity ONNX Runtime vs torch on 64 random images" in proc.stdout
    # The example uses the library alone, never the command line.
    assert "compress.cli" not in (ROOT / "examples" / "slim_resnet18.py").read_text()
    # The saved directory is a complete model for the CLI, in a new process.
    out = subprocess.run([sys.executable, "-m", "compress.cli", "eval", str(tmp_path / "run" / "model"),
                          "--data", str(data), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["images"] == 18
