"""The scripts in examples/ run exactly as written, at a tiny scale."""

import json
import os
import re
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
    sparse = json.loads((tmp_path / "run" / "sparse" / "model.json").read_text())
    assert meta["macs"] < sparse["macs"] and f"compress bench {tmp_path / 'run' / 'sparse'} " in proc.stdout
    from compress.runtime.cpu_features import nchwc_block

    assert plan["round_to"] == nchwc_block()  # "auto", resolved for this CPU
    # The example uses the library alone, never the command line.
    assert "compress.cli" not in (ROOT / "examples" / "slim_resnet18.py").read_text()
    # The saved directory is a complete model for the CLI, in a new process.
    out = subprocess.run([sys.executable, "-m", "compress.cli", "eval", str(tmp_path / "run" / "model"),
                          "--data", str(data), "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["images"] == 18


def _run_example(name: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compress.cli" not in (ROOT / "examples" / name).read_text()  # the library alone
    return proc


def _paired(stdout: str) -> list[str]:
    """The pruned network's time over the unpruned one's, from the timing in turns."""
    return re.findall(r"^model\.onnx: ×\d\.\d{3} of sparse's time at batch 1 \(95% interval \d\.\d{3}–\d\.\d{3}, "
                      r"6 blocks in turns\): (?:faster|slower|level)$", stdout, re.M)


def _latencies(stdout: str) -> dict[str, float]:
    rows = [line.split(": batch 1 p50 ") for line in stdout.splitlines() if ": batch 1 p50 " in line]
    return {name: float(value.split()[0]) for name, value in rows}


@pytest.mark.slow
def test_slim_timm_example(tmp_path):
    pytest.importorskip("timm", reason="timm is optional; the dev extra installs it")
    data = make_image_folder(tmp_path / "imgs", classes=("a", "b", "c"), per_class=6, size=72)
    proc = _run_example("slim_timm.py", ["--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
                                         "--steps", "2", "--batch-size", "8", "--workers", "0", "--bench-iters", "5",
                                         "--paired-blocks", "6"],
                        tmp_path)
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["arch"] == "timm:create_model" and meta["arch_kwargs"]["model_name"] == "mobilenetv3_large_100"
    sparse = json.loads((tmp_path / "run" / "sparse" / "model.json").read_text())
    assert meta["macs"] < sparse["macs"]
    assert "parity ONNX Runtime vs torch" in proc.stdout
    assert re.search(r"in float64 \d\.\de-\d\d\)", proc.stdout)  # the float64 look ran, and passed
    assert set(_latencies(proc.stdout)) == {"sparse", "model.onnx"} and len(_paired(proc.stdout)) == 1


def _yolo_dataset(root: Path, n: int = 8, side: int = 64) -> Path:
    """A YOLO-format folder: dark images, one bright box each, its label normalized to the image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        pixels = (rng.random((side, side, 3)) * 60).astype(np.uint8)
        x0, y0 = rng.integers(4, side // 2, 2)
        w, h = rng.integers(8, side // 2, 2)
        pixels[y0:y0 + h, x0:x0 + w] = 200
        Image.fromarray(pixels).save(root / "images" / f"im{i}.png")
        cx, cy = (x0 + w / 2) / side, (y0 + h / 2) / side
        (root / "labels" / f"im{i}.txt").write_text(f"{i % 2} {cx:.4f} {cy:.4f} {w / side:.4f} {h / side:.4f}\n")
    return root


@pytest.mark.slow
def test_slim_yolo_example(tmp_path):
    pytest.importorskip("ultralytics", reason="ultralytics is optional (AGPL-3.0); the dev extra installs it")
    data = _yolo_dataset(tmp_path / "yolo")
    proc = _run_example("slim_yolo.py", ["--data", str(data), "--classes", "a,b", "--out", str(tmp_path / "run"),
                                         "--size", "64", "--epochs", "1", "--steps", "2", "--batch-size", "4",
                                         "--bench-iters", "5", "--paired-blocks", "6"], tmp_path)
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    sparse = json.loads((tmp_path / "run" / "sparse" / "model.json").read_text())
    assert meta["classes"] == ["a", "b"] and meta["macs"] < sparse["macs"]
    assert "self-check" in proc.stdout and "parity ONNX Runtime vs torch" in proc.stdout
    assert set(_latencies(proc.stdout)) == {"sparse", "model.onnx"} and len(_paired(proc.stdout)) == 1


def test_slim_resnet18_example_refuses_a_size_whose_stem_the_registry_would_not_rebuild(tmp_path):
    """Below 64 px the registry's resnet18 has the CIFAR stem: the example used to train for its epochs and
    then fail in save_model with a traceback."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "slim_resnet18.py"), "--data", str(tmp_path),
                           "--out", str(tmp_path / "run"), "--input-size", "32"],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--input-size must be at least 64" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
