"""The issue-8 journeys end to end, each command in its own process as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests_support import make_image_folder, write_user_module

ROOT = Path(__file__).resolve().parents[2]


def _run(cwd: Path, *args, ok=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(cwd)])}
    proc = subprocess.run([sys.executable, "-m", "compress.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_own_class_through_the_cli_chain(tmp_path):
    write_user_module(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        from mynets import MyNet

        torch.manual_seed(0)
        torch.save(MyNet(width=8, num_classes=2).state_dict(), tmp_path / "w.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynets", None)
    data = make_image_folder(tmp_path / "imgs", per_class=16, size=48)
    _run(tmp_path, "import", "w.pt", "--arch", "mynets:MyNet", "--arch-kwargs", '{"width": 8}',
         "--input-size", 48, "--data", data, "--out", "M")
    _run(tmp_path, "slim", "--from", "M", "--data", data, "--percent", 0.4, "--epochs", 1, "--finetune-epochs", 1,
         "--batch-size", 8, "--out", "R")
    summary = json.loads((tmp_path / "R" / "summary.json").read_text())
    assert summary["arch"] == "mynets:MyNet"
    assert summary["stages"]["pruned"]["params"] < summary["stages"]["sparse"]["params"]
    sparse = json.loads((tmp_path / "R" / "sparse" / "model.json").read_text())
    assert sparse["parent"]["sha256"] == json.loads((tmp_path / "M" / "model.json").read_text())["weights_sha256"]
    _run(tmp_path, "export", "R/finetuned", "--onnx", "R.onnx")
    assert (tmp_path / "R.onnx").stat().st_size > 0
    out = _run(tmp_path, "eval", "R.onnx", "--data", data, "--json")
    assert json.loads(out.stdout)["images"] == 32
