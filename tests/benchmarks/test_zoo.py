"""benchmarks/zoo.py's mechanics on two small networks: each row runs in its own worker, the table and the
JSON are written, and --rerun replaces one row of a recorded sweep and keeps the others."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("timm", reason="timm is optional; the dev extra installs it")
pytest.importorskip("torch_pruning", reason="torch-pruning is optional; the dev extra installs it")


def _zoo(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "zoo.py"), *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_zoo_writes_its_table_and_reruns_one_row(tmp_path):
    done = _zoo("--names", "timm:mobilenetv3_small_050,tv:mobilenet_v3_small", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    recorded = json.loads((tmp_path / "zoo.json").read_text())
    rows = {r["name"]: r for r in recorded["rows"]}
    assert set(rows) == {"timm:mobilenetv3_small_050", "tv:mobilenet_v3_small"}
    for row in rows.values():
        assert row["status"] == "ok" and row["exact_rel_diff"] <= 1e-5 and row["onnx_parity"]["passed"]
        assert row["channels_after"] < row["channels_before"] and row["torch_pruning"]["status"]
        zero = row["at_zero"]
        assert zero["threshold"] == 0 and zero["removed_gamma_max"] == 0 and zero["rel_diff"] <= 1e-5
    table = (tmp_path / "README.md").read_text()
    assert "| timm:mobilenetv3_small_050 | 224 | ok |" in table and "0 FAIL" in table
    again = _zoo("--names", "tv:mobilenet_v3_small", "--out", str(tmp_path), "--rerun")
    assert again.returncode == 0, again.stderr[-2000:]
    merged = json.loads((tmp_path / "zoo.json").read_text())
    assert [r["name"] for r in merged["rows"]] == ["timm:mobilenetv3_small_050", "tv:mobilenet_v3_small"]
    assert merged["rows"][0] == rows["timm:mobilenetv3_small_050"] and "rerun" in merged["machine"]
