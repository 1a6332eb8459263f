"""`compress import` and compress.import_weights: model directories from trained weights of registry and user
classes."""

import json
import sys

import pytest
import torch
import torchvision
from click.testing import CliRunner

from compress.artifact import load_model_dir
from compress.cli import main
from compress.errors import CompressError
from compress.stages.import_weights import import_weights
from tests_support import make_image_folder, write_user_module

MEAN = "0.485,0.456,0.406"
STD = "0.229,0.224,0.225"


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    write_user_module(tmp_path / "src")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield "mynets"
    sys.modules.pop("mynets", None)


def test_torchvision_checkpoint_loads_unchanged_and_predicts_the_same(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    r = _cli("import", tmp_path / "r18.pth", "--arch", "resnet18", "--input-size", 96, "--classes", "a,b,c",
             "--mean", MEAN, "--std", STD, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    model, meta = load_model_dir(tmp_path / "m")
    assert meta["classes"] == ["a", "b", "c"] and meta["input_size"] == [3, 96, 96]
    assert meta["arch_kwargs"]["image_size"] == 96
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-5)


def test_weights_for_another_architecture_name_the_first_tensor(tmp_path):
    torch.save(torchvision.models.mobilenet_v2(num_classes=2).state_dict(), tmp_path / "mb.pth")
    r = _cli("import", tmp_path / "mb.pth", "--arch", "resnet18", "--input-size", 96, "--classes", "a,b",
             "--mean", MEAN, "--std", STD, "--out", tmp_path / "m")
    assert r.exit_code == 2
    line = r.output.strip()
    assert "\n" not in line and "does not fit resnet18: tensor conv1.weight" in line
    assert not (tmp_path / "m").exists()


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp_path / "r.pth")
    with pytest.raises(CompressError, match=r"fc.weight is \[5, 512\] in the file and \[2, 512\]"):
        import_weights(tmp_path / "r.pth", "resnet18", tmp_path / "m", input_size=96, classes=["a", "b"],
                       mean=[0.5] * 3, std=[0.25] * 3)


def test_user_class_with_arch_kwargs_and_data(tmp_path, user_module):
    from mynets import MyNet

    data = make_image_folder(tmp_path / "imgs", per_class=4, size=48)
    torch.save(MyNet(width=8, num_classes=2).state_dict(), tmp_path / "w.pt")
    r = _cli("import", tmp_path / "w.pt", "--arch", "mynets:MyNet", "--arch-kwargs", '{"width": 8}',
             "--data", data, "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["arch"] == "mynets:MyNet"
    assert meta["arch_kwargs"] == {"width": 8, "num_classes": 2}
    assert meta["classes"] == ["cat", "dog"] and meta["input_size"] == [3, 48, 48]
    assert meta["accuracy"] is not None and len(meta["normalization"]["mean"]) == 3
    model, _ = load_model_dir(tmp_path / "m", trust="mynets")  # a directory naming code loads only if trusted
    assert type(model).__name__ == "MyNet"


@pytest.mark.parametrize("arch, kwargs, message", [
    ("nosuchmodule:Net", "{}", "cannot import module 'nosuchmodule'"),
    ("mynets:NotAModule", "{}", "is not an nn.Module class"),
    ("mynets:Missing", "{}", "has no attribute 'Missing'"),
    ("mynets:MyNet", '{"depth": 3}', "does not take the arguments"),
    ("mynets:MyNet", '[1, 2]', "must be a JSON object"),
    ("not a path", "{}", "unknown architecture"),
])
def test_bad_architectures_get_one_line(tmp_path, user_module, arch, kwargs, message):
    torch.save({"x": torch.zeros(1)}, tmp_path / "w.pt")
    r = _cli("import", tmp_path / "w.pt", "--arch", arch, "--arch-kwargs", kwargs, "--input-size", 48,
             "--classes", "a,b", "--mean", MEAN, "--std", STD, "--out", tmp_path / "m")
    assert r.exit_code == 2, r.output
    assert message in r.output and r.output.strip().count("\n") == 0
    assert not (tmp_path / "m").exists()


def test_an_input_size_the_network_cannot_take(tmp_path):
    from compress.models import create_model

    torch.save(create_model("vgg11", width=0.125).state_dict(), tmp_path / "v.pth")
    r = _cli("import", tmp_path / "v.pth", "--arch", "vgg11", "--arch-kwargs", '{"width": 0.125}',
             "--input-size", 8, "--classes", ",".join("abcdefghij"), "--mean", MEAN, "--std", STD,
             "--out", tmp_path / "m")
    assert r.exit_code == 2
    assert "cannot take 8x8 inputs" in r.output
    assert not (tmp_path / "m").exists()


def test_class_count_must_match_the_output_width(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r.pth")
    with pytest.raises(CompressError, match="fc.weight"):
        import_weights(tmp_path / "r.pth", "resnet18", tmp_path / "m", input_size=96, classes=["a", "b"],
                       mean=[0.5] * 3, std=[0.25] * 3)


def test_normalization_is_required_without_data(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), tmp_path / "r.pth")
    with pytest.raises(CompressError, match="--mean and --std"):
        import_weights(tmp_path / "r.pth", "resnet18", tmp_path / "m", input_size=96, classes=["a", "b"])
