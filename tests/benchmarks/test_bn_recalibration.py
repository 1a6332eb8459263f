"""benchmarks/bn_recalibration.py: mechanics on a tiny model (the figures come from trained ones)."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bn_recalibration  # noqa: E402


def test_table_gives_each_model_as_trained_plain_and_augmented(tmp_path, cifar10_archive, monkeypatch):
    from compress.artifact import save_model_dir
    from compress.data import load_dataset
    from compress.models import create_model

    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.125)
    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125},
            "classes": load_dataset("cifar10", "test", limit=10).classes, "input_size": [3, 32, 32],
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_dir(model, tmp_path / "m", meta)
    out = tmp_path / "table.md"
    assert bn_recalibration.main([str(tmp_path / "m"), "--images", "40", "--train-limit", "100",
                                  "--test-limit", "30", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Machine:" in text and "Run: " in text and " UTC" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {tmp_path / 'm'} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "vgg11" and cells[2] == "30" and all("%" in c for c in cells[3:])


def test_an_output_inside_an_input_model_directory_is_refused_and_nothing_changes(tmp_path):
    from compress.artifact import save_model_dir
    from compress.models import create_model

    model = create_model("vgg11", width=0.125)
    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125}, "classes": [str(i) for i in range(10)],
            "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_dir(model, tmp_path / "m", meta)
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    with pytest.raises(SystemExit) as exc:
        bn_recalibration.main([str(tmp_path / "m"), "--out", str(tmp_path / "m" / "model.json")])
    assert exc.value.code == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before
    assert bn_recalibration.main([str(tmp_path / "missing")]) == 2
