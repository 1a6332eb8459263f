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
    # The directories name the user's own module, which they trust (docs/SECURITY.md).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(cwd)]), "COMPRESS_TRUSTED_CODE": "mynets"}
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
    # --round-to 4: the quick preset's "auto" is 16 with AVX-512, which keeps every channel of 8-wide layers.
    _run(tmp_path, "slim", "--from", "M", "--data", data, "--percent", 0.4, "--epochs", 1, "--finetune-epochs", 1,
         "--batch-size", 8, "--round-to", 4, "--out", "R")
    summary = json.loads((tmp_path / "R" / "summary.json").read_text())
    assert summary["arch"] == "mynets:MyNet"
    assert summary["stages"]["pruned"]["params"] < summary["stages"]["sparse"]["params"]
    sparse = json.loads((tmp_path / "R" / "sparse" / "model.json").read_text())
    assert sparse["parent"]["sha256"] == json.loads((tmp_path / "M" / "model.json").read_text())["weights_sha256"]
    _run(tmp_path, "export", "R/finetuned", "--onnx", "R.onnx")
    assert (tmp_path / "R.onnx").stat().st_size > 0
    out = _run(tmp_path, "eval", "R.onnx", "--data", data, "--json")
    assert json.loads(out.stdout)["images"] == 32


USER_SCRIPT = '''
import sys
import torch
import torch.nn.functional as F
import compress
from mynets import MyNet

out = sys.argv[1]
torch.manual_seed(0)
model = MyNet(width=8, num_classes=2)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
reg = compress.SparsityRegularizer(model, 1e-3)
for step in range(4):
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 2, (8,))
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    reg.step(opt)
    opt.step()
plan = compress.prune(model.eval(), torch.zeros(1, 3, 64, 64), percent=0.4)
plan.save(out + "-plan.json")
compress.save_model(model, out, arch_kwargs={"width": 8, "num_classes": 2}, classes=["cat", "dog"],
                    input_size=64, mean=[0.5] * 3, std=[0.25] * 3)
print(plan.channels_before, plan.channels_after)
'''


@pytest.mark.slow
def test_own_class_in_python_then_the_cli_in_a_new_process(tmp_path):
    write_user_module(tmp_path)
    (tmp_path / "user_script.py").write_text(USER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    proc = subprocess.run([sys.executable, "user_script.py", "M"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after = map(int, proc.stdout.split())
    assert after < before
    meta = json.loads((tmp_path / "M" / "model.json").read_text())
    assert meta["arch"] == "mynets:MyNet" and meta["input_size"] == [3, 64, 64]
    data = make_image_folder(tmp_path / "imgs", per_class=4, size=64)
    ev = _run(tmp_path, "eval", "M", "--data", data, "--json")
    assert json.loads(ev.stdout)["images"] == 8
    _run(tmp_path, "export", "M", "--onnx", "M.onnx")
    bench = _run(tmp_path, "bench", "M.onnx", "--batch", "1", "--iters", "5", "--warmup", "1",
                 "--report", "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = report["variants"][0]["latency"]
    assert rows and rows[0]["status"] == "ok" and rows[0]["end_to_end"]["p50_ms"] > 0, bench.stdout


@pytest.mark.slow
def test_torchvision_checkpoint_import_slim_export_quantize_bench(tmp_path):
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "r18.pth")
    data = make_image_folder(tmp_path / "imgs", per_class=8, size=64)
    _run(tmp_path, "import", "r18.pth", "--arch", "resnet18", "--input-size", 64, "--data", data, "--out", "M")
    meta = json.loads((tmp_path / "M" / "model.json").read_text())
    assert meta["arch_kwargs"]["image_size"] == 64 and meta["widths"]["conv1"]["in_channels"] == 3
    _run(tmp_path, "slim", "--from", "M", "--data", data, "--percent", 0.3, "--epochs", 1, "--finetune-epochs", 1,
         "--batch-size", 8, "--out", "R")
    summary = json.loads((tmp_path / "R" / "summary.json").read_text())
    assert summary["stages"]["finetuned"]["macs"] < summary["stages"]["sparse"]["macs"]
    _run(tmp_path, "export", "R/finetuned", "--onnx", "r18.onnx", "--data", data)
    _run(tmp_path, "quantize", "r18.onnx", "--data", data, "--calib-images", 8, "--out", "r18-int8.onnx")
    assert (tmp_path / "r18-int8.onnx").stat().st_size < (tmp_path / "r18.onnx").stat().st_size
    _run(tmp_path, "bench", "r18.onnx", "r18-int8.onnx", "--batch", "1", "--iters", "5", "--warmup", "1",
         "--report", "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [v["status"] for v in report["variants"]] == ["ok", "ok"]
