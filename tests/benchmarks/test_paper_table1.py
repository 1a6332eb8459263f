"""benchmarks/paper/table1.py at its tiny scale: every row of the paper's Table 1 runs end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_scale_runs_every_row_and_writes_the_table(tmp_path, cifar10_archive):
    import os

    env = {**os.environ, "COMPRESS_DATA": str(cifar10_archive), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paper" / "table1.py"), "--scale", "tiny",
                           "--out", str(tmp_path), "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((tmp_path / "table1.json").read_text())
    assert list(table["rows"]) == ["vgg19-70", "preresnet164-40", "preresnet164-60", "densenet40-40",
                                   "densenet40-70"]
    for row, r in table["rows"].items():
        assert 0 < r["params_reduction"] < 1 and 0 < r["flops_reduction"] < 1, row
    rows = table["rows"]
    # Pruning the same sparse network harder removes more.
    assert rows["preresnet164-60"]["params_reduction"] > rows["preresnet164-40"]["params_reduction"]
    assert rows["densenet40-70"]["params_reduction"] > rows["densenet40-40"]["params_reduction"]
    # The two ratios share one sparse model.
    assert (tmp_path / "preresnet164" / "sparse" / "model.json").exists()
    md = (tmp_path / "table1.md").read_text()
    assert "6.34% → 6.20%" in md and "Date:" in md
