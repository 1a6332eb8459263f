"""One import namespace: the four rooms (compress/, models/, export/, runtime/) import as compress,
compress.models, compress.exporting and compress.runtime, so that a user's own top-level packages of
those names neither shadow ours nor are shadowed by them."""

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = {"compress": "compress", "compress.models": "models", "compress.exporting": "export",
         "compress.runtime": "runtime"}


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    """setuptools is given the package list by hand (a package-dir mapping has no `find` for it): a folder
    with an __init__.py that is missing from the list would be left out of every non-editable install."""
    config = _config()
    assert config["package-dir"] == ROOMS
    found = set()
    for name, folder in ROOMS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if "__pycache__" not in rel.parts:
                found.add(".".join([name, *rel.parts]))
    assert sorted(config["packages"]) == sorted(found)


def test_a_user_project_with_its_own_models_export_and_runtime_packages(tmp_path):
    """YOLOv5's layout (and many others) has top-level `models/`, `export/` and `runtime/` packages: save,
    load, export and bench run from inside such a project, and both sides import their own modules."""
    for name in ("models", "export", "runtime"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"WHO = 'user {name}'\n")
    (tmp_path / "models" / "net.py").write_text(textwrap.dedent("""
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self, num_classes=10):
                super().__init__()
                self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
                self.bn = nn.BatchNorm2d(8)
                self.fc = nn.Linear(8, num_classes)

            def forward(self, x):
                return self.fc(self.bn(self.conv(x)).relu().mean((2, 3)))
    """))
    script = textwrap.dedent("""
        import torch
        import compress
        import models, export, runtime
        from models.net import Net

        model = Net()
        compress.save_model(model, "m", arch="models.net:Net", arch_kwargs={"num_classes": 10},
                            classes=[str(i) for i in range(10)], input_size=16,
                            mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
        loaded, meta = compress.load_model("m")
        x = torch.randn(2, 3, 16, 16)
        assert torch.allclose(loaded(x), model.eval()(x))
        assert (models.WHO, export.WHO, runtime.WHO) == ("user models", "user export", "user runtime")
        print("ok", meta["arch"])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok models.net:Net" in result.stdout
    for args in (["export", "m", "--onnx", "m.onnx"], ["bench", "m.onnx", "--batch", "1", "--iters", "5"]):
        result = subprocess.run([sys.executable, "-m", "compress.cli", *args], cwd=tmp_path, capture_output=True,
                                text=True, timeout=300, env=_env(tmp_path))
        assert result.returncode == 0, result.stderr[-2000:]


def _env(tmp_path: Path) -> dict:
    import os

    # The user's project root first on the path, as `python -m` or a script in that folder would have it;
    # the model directory names the user's own module, which they trust (docs/SECURITY.md).
    return {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1", "COMPRESS_TRUSTED_CODE": "models.net"}
