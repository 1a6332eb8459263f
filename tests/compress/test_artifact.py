import json
import subprocess
import sys

import pytest
import torch

from compress import slimming
from compress.artifact import load_model_dir, save_model_dir
from compress.errors import CompressError
from compress.models import create_model

META = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.25}, "classes": [str(i) for i in range(10)],
        "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}


def pruned_vgg():
    model = create_model("vgg11", width=0.25).eval()
    for bn in slimming.bn_layers(model):
        bn.weight.data = torch.rand(bn.num_features) + 0.01
        bn.bias.data = torch.randn(bn.num_features)
    model, _ = slimming.prune(model, 0.5, torch.zeros(1, 3, 32, 32))
    return model


def test_pruned_model_reloads_in_a_fresh_process(tmp_path):
    model = pruned_vgg()
    meta = save_model_dir(model, tmp_path / "m", META)
    x = torch.randn(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "y.pt")
    code = (
        "import sys, torch; from compress.artifact import load_model_dir\n"
        f"m, meta = load_model_dir(r'{tmp_path / 'm'}')\n"
        f"x = torch.load(r'{tmp_path / 'x.pt'}'); y = torch.load(r'{tmp_path / 'y.pt'}')\n"
        "assert (m(x) - y).abs().max() < 1e-5, 'outputs differ'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert meta["params"] == sum(p.numel() for p in model.parameters())
    assert meta["flops"] == 2 * meta["macs"]
    widths = json.loads((tmp_path / "m" / "model.json").read_text())["widths"]
    assert widths["features.0"]["out_channels"] == model.features[0].out_channels < 16


def test_weights_that_do_not_fit_the_widths_are_refused(tmp_path):
    save_model_dir(pruned_vgg(), tmp_path / "m", META)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["widths"]["features.0"]["out_channels"] += 1
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CompressError, match="does not fit|the model needs"):
        load_model_dir(tmp_path / "m")


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(CompressError, match="not found"):
        load_model_dir(tmp_path / "absent")
    (tmp_path / "half").mkdir()
    with pytest.raises(CompressError, match="not a model directory"):
        load_model_dir(tmp_path / "half")
    save_model_dir(create_model("vgg11", width=0.25), tmp_path / "m", META)
    blob = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CompressError, match="corrupt"):
        load_model_dir(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text("{not json")
    with pytest.raises(CompressError, match="not valid JSON"):
        load_model_dir(tmp_path / "m")


def test_unknown_arch_in_metadata(tmp_path):
    save_model_dir(create_model("vgg11", width=0.25), tmp_path / "m", META)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["arch"] = "vgg12"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CompressError):
        load_model_dir(tmp_path / "m")


def test_compensation_bias_survives_reload(tmp_path):
    """Compensation may give a bias-free layer a bias; the rebuilt module must have it too."""
    model = create_model("resnet18").eval()
    for bn in slimming.bn_layers(model):
        bn.weight.data = torch.rand(bn.num_features) + 0.01
        bn.bias.data = torch.randn(bn.num_features)
    model, _ = slimming.prune(model, 0.5, torch.zeros(1, 3, 32, 32))
    meta = dict(META, arch="resnet18", arch_kwargs={"num_classes": 10})
    save_model_dir(model, tmp_path / "r", meta)
    again, _ = load_model_dir(tmp_path / "r")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(again(x), model(x), atol=1e-5)
