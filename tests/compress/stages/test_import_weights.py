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


def _imported(tmp_path, net, arch, size, name="w.pth", state=None, **kwargs):
    torch.save(net.state_dict() if state is None else state, tmp_path / name)
    out = tmp_path / f"m-{name}"
    import_weights(tmp_path / name, arch, out, input_size=size, classes=[str(i) for i in range(3)],
                   mean=[0.5] * 3, std=[0.25] * 3, **kwargs)
    model, meta = load_model_dir(out)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net.eval()(x), rtol=1e-5, atol=1e-5)
    return meta


def test_a_torchvision_mobilenet_at_cifar_size_is_refused_until_its_stem_is_named(tmp_path):
    """Both stems have a 3x3 first convolution: torchvision's weights went into the registry's stride-1 stem
    below 64 px, accepted, with outputs 0.7-185% off and other predictions."""
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=3)
    with pytest.raises(CompressError, match=r"fits mobilenet_v3_small with either stem, which compute different "
                                            r"things: pass --arch-kwargs '\{\"cifar_stem\": false\}'"):
        _imported(tmp_path, net, "mobilenet_v3_small", 32)
    assert not (tmp_path / "m-w.pth").exists()
    meta = _imported(tmp_path, net, "mobilenet_v3_small", 32, arch_kwargs={"cifar_stem": False})
    assert meta["arch_kwargs"]["cifar_stem"] is False


def test_a_torchvision_mobilenet_at_its_own_sizes_needs_no_word_and_a_users_class_is_not_asked(
        tmp_path, monkeypatch):
    """A first version asked at every size (both 3x3 stems always fit) and sent a user's class that takes
    cifar_stem to the registry's name parser (a bare ValueError); the review found both."""
    torch.manual_seed(0)
    assert _imported(tmp_path, torchvision.models.mobilenet_v3_small(num_classes=3), "mobilenet_v3_small",
                     96)["arch_kwargs"]["cifar_stem"] is False
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "stemnets.py").write_text(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, num_classes=3, cifar_stem=False):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3, stride=1 if cifar_stem else 2)\n"
        "        self.fc = nn.Linear(4, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.conv(x).mean((2, 3)))\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.setenv("COMPRESS_TRUSTED_CODE", "stemnets")
    import stemnets

    try:
        _imported(tmp_path, stemnets.Net(cifar_stem=True), "stemnets:Net", 32, name="own.pth",
                  arch_kwargs={"cifar_stem": True})
    finally:
        sys.modules.pop("stemnets", None)


def test_a_files_module_versions_are_not_taken_from_the_file(tmp_path):
    """The file's `_metadata` drove torch's loaders: a version "x" raised a bare TypeError, MNASNet's version 1
    rebuilt its stem inside the model being loaded."""
    torch.manual_seed(0)
    for net, arch in ((torchvision.models.resnet18(num_classes=3), "resnet18"),
                      (torchvision.models.mnasnet0_5(num_classes=3), "mnasnet0_5")):
        state = net.state_dict()
        state._metadata = {k: {"version": "x" if arch == "resnet18" else 1} for k in state._metadata}
        _imported(tmp_path, net, arch, 64, name=f"{arch}.pth", state=state)


def test_a_torchvision_resnet_at_cifar_size_takes_the_stem_its_weights_fit(tmp_path):
    """Refused before ("conv1.weight is [64, 3, 7, 7] in the file and [64, 3, 3, 3]"): only torchvision's own
    stem fits the file, so it is that one."""
    torch.manual_seed(0)
    assert _imported(tmp_path, torchvision.models.resnet18(num_classes=3), "resnet18", 32)["arch_kwargs"][
        "cifar_stem"] is False


def test_checkpoints_as_people_have_them_load_exactly(tmp_path):
    """MNASNet's loader needs the per-module versions torch.save keeps (a raw ValueError); checkpoints from
    before PyTorch 0.4.1 lack num_batches_tracked; DDP around torch.compile prefixes module._orig_mod."""
    torch.manual_seed(0)
    _imported(tmp_path, torchvision.models.mnasnet0_5(num_classes=3), "mnasnet0_5", 64)
    net = torchvision.models.resnet18(num_classes=3)
    old = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    _imported(tmp_path, net, "resnet18", 64, name="old.pth", state=old)
    _imported(tmp_path, net, "resnet18", 64, name="ddp.pth",
              state={f"module._orig_mod.{k}": v for k, v in net.state_dict().items()})


@pytest.mark.parametrize("broken, message", [
    (lambda v: v.fill_(float("nan")), r"bad.pth: tensor bn1.running_var holds 64 non-finite value"),
    (lambda v: v.mul_(-1), r"bad.pth: tensor bn1.running_var holds 64 negative variance\(s\)"),
])
def test_broken_batchnorm_statistics_are_named_with_the_file(tmp_path, broken, message):
    """A NaN was named in a temporary file of the output folder; a negative variance as "the output holds NaN"."""
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    broken(state["bn1.running_var"])
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CompressError, match=message):
        import_weights(tmp_path / "bad.pth", "resnet18", tmp_path / "m", input_size=64, classes=["a", "b", "c"],
                       mean=[0.5] * 3, std=[0.25] * 3)
    assert not (tmp_path / "m").exists()
