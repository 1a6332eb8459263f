import json
import subprocess
import sys

import pytest
import torch

import compress
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


# --- issue 18: non-finite weights, duplicated tensor names, unbounded construction -------------------------

def _rewrite_weights(path, change):
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    change(state)
    save_file(state, str(path))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_weights_are_refused_when_saved(tmp_path, value):
    import compress

    model = create_model("vgg11", width=0.25)
    model.features[1].weight.data[3] = value
    with pytest.raises(CompressError, match=r"tensor features\.1\.weight holds 1 non-finite"):
        save_model_dir(model, tmp_path / "m", META)
    assert not (tmp_path / "m" / "model.json").exists() and not (tmp_path / "m" / "model.safetensors").exists()
    with pytest.raises(CompressError, match=r"features\.1\.weight"):
        compress.save_model(model, tmp_path / "n", arch="vgg11", arch_kwargs=META["arch_kwargs"],
                            classes=META["classes"], input_size=32, mean=[0.5] * 3, std=[0.25] * 3)
    assert not (tmp_path / "n").exists()


def test_nonfinite_weights_are_refused_when_loaded(tmp_path):
    save_model_dir(create_model("vgg11", width=0.25), tmp_path / "m", META)

    def poison(state):
        state["features.5.running_var"][0] = float("nan")
    _rewrite_weights(tmp_path / "m" / "model.safetensors", poison)
    with pytest.raises(CompressError) as err:
        load_model_dir(tmp_path / "m")
    assert "tensor features.5.running_var holds 1 non-finite" in str(err.value) and "\n" not in str(err.value)


def _safetensors(path, entries, payload: bytes):
    import struct

    header = "{" + ",".join(f'"{name}":{json.dumps(spec)}' for name, spec in entries) + "}"
    raw = header.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


def test_a_duplicated_tensor_name_is_refused(tmp_path):
    """safetensors itself merges two identical entries of one name into one tensor and loads the file."""
    from safetensors.torch import load_file

    from compress.weights_file import check_header

    spec = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    _safetensors(tmp_path / "dup.safetensors", [("w", spec), ("w", spec)], bytes(16))
    assert list(load_file(str(tmp_path / "dup.safetensors"))) == ["w"]  # what we guard against
    with pytest.raises(CompressError, match="lists tensor 'w' twice"):
        check_header(tmp_path / "dup.safetensors")
    from compress.importing import read_state_dict

    with pytest.raises(CompressError, match="lists tensor 'w' twice"):  # compress import read it merged
        read_state_dict(tmp_path / "dup.safetensors")
    save_model_dir(create_model("vgg11", width=0.25), tmp_path / "m", META)
    weights = tmp_path / "m" / "model.safetensors"
    blob = weights.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    name, first = next((k, v) for k, v in header.items() if k != "__metadata__")
    text = blob[8:8 + n].decode().rstrip()
    doubled = text[:-1] + f',"{name}":{json.dumps(first)}' + "}"
    raw = doubled.encode() + b" " * (-len(doubled) % 8)
    weights.write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + n:])
    with pytest.raises(CompressError, match=f"lists tensor '{name}' twice"):
        load_model_dir(tmp_path / "m")


@pytest.mark.parametrize("claim", [1 << 40, 10 ** 9])
def test_a_header_length_beyond_the_file_is_refused(tmp_path, claim):
    from compress.weights_file import check_header

    (tmp_path / "w.safetensors").write_bytes(claim.to_bytes(8, "little") + b"{}")
    with pytest.raises(CompressError, match="header claims"):
        check_header(tmp_path / "w.safetensors")


def test_construction_beyond_memory_stops_before_initialization(tmp_path, monkeypatch):
    import compress.limits

    save_model_dir(create_model("vgg11", width=0.25), tmp_path / "m", META)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["arch_kwargs"]["width"] = 64.0  # 256x wider than recorded: 140.6 GiB of VGG-11 weights
    meta.pop("widths")
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    monkeypatch.setattr(compress.limits, "available_memory", lambda: 2 ** 30)
    with pytest.raises(CompressError, match="builds tensors of 140.6 GiB, beyond the 1.0 GiB"):
        load_model_dir(tmp_path / "m")  # from its shapes on the meta device, before any layer is built
    # A constructor that cannot run on the meta device is counted as it builds, and stopped the same way.
    import compress.artifact

    monkeypatch.setattr(compress.artifact, "_refuse_oversized", lambda arch, what, build: None)
    with pytest.raises(CompressError, match="builds tensors of more than .* beyond the 1.0 GiB"):
        load_model_dir(tmp_path / "m")


@pytest.mark.parametrize("command", [["info"], ["export", "--onnx", "o.onnx"]])
def test_the_cli_refuses_a_directory_with_nonfinite_weights(tmp_path, monkeypatch, command):
    from click.testing import CliRunner

    from compress.cli.main import main

    save_model_dir(create_model("vgg11", width=0.25), tmp_path / "m", META)

    def poison(state):
        state["classifier.weight"][0, 0] = float("inf")
    _rewrite_weights(tmp_path / "m" / "model.safetensors", poison)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [command[0], "m", *command[1:]])
    assert result.exit_code == 2 and "tensor classifier.weight holds 1 non-finite" in result.output, result.output
    assert not (tmp_path / "o.onnx").exists()


def test_a_network_that_checks_its_state_dict_version_loads(tmp_path):
    """torchvision's MNASNet refuses a state dict without per-module versions, which safetensors does not
    keep: loading gives it the architecture's own (a raw ValueError before)."""
    import torchvision

    model = torchvision.models.mnasnet0_5(num_classes=3).eval()
    compress.save_model(model, tmp_path / "m", arch="tv_mnasnet0_5", arch_kwargs={"num_classes": 3, "image_size": 64},
                        classes=["a", "b", "c"], input_size=64, mean=[0.5] * 3, std=[0.25] * 3)
    loaded, _ = compress.load_model(tmp_path / "m")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_class_rebuilt_with_its_defaults_that_differs_says_to_pass_its_arguments(tmp_path):
    """SqueezeNet 1.1 saved by its class was rebuilt as SqueezeNet 1.0; the line named a layer, not the way out."""
    import torchvision

    from compress.artifact import save_model
    from compress.errors import CompressError

    model = torchvision.models.squeezenet1_1(num_classes=3).eval()
    with pytest.raises(CompressError, match=r"SqueezeNet does not have; torchvision.models.squeezenet:SqueezeNet was "
                                            r"rebuilt with its constructor's defaults, since no arch or arch_kwargs "
                                            r"were given: pass the arguments the model was built with as arch_kwargs"):
        save_model(model, tmp_path / "sq", classes=["a", "b", "c"], input_size=64, mean=[0.5] * 3, std=[0.25] * 3)
    assert not (tmp_path / "sq").exists()
    save_model(model, tmp_path / "sq", classes=["a", "b", "c"], input_size=64, mean=[0.5] * 3, std=[0.25] * 3,
               arch_kwargs={"version": "1_1", "num_classes": 3})
    assert (tmp_path / "sq" / "model.json").is_file()


def test_a_registry_name_whose_defaults_differ_from_the_model_says_which_it_added(tmp_path):
    """torchvision's ResNet-18 saved as arch="resnet18" was refused by a tensor's shape alone: the registry's
    resnet18 adds the CIFAR stem, which the line did not say."""
    import torchvision

    from compress.artifact import save_model

    model = torchvision.models.resnet18(num_classes=3).eval()
    with pytest.raises(CompressError, match=r"tensor conv1.weight is \(64, 3, 3, 3\) there and \(64, 3, 7, 7\) in the "
                                            r"model; the registry's resnet18 adds image_size=32, cifar_stem=True "
                                            r"unless arch_kwargs give them"):
        save_model(model, tmp_path / "r", classes=["a", "b", "c"], input_size=32, mean=[0.5] * 3, std=[0.25] * 3,
                   arch="resnet18")
    assert not (tmp_path / "r").exists()
    save_model(model, tmp_path / "r", classes=["a", "b", "c"], input_size=32, mean=[0.5] * 3, std=[0.25] * 3,
               arch="resnet18", arch_kwargs={"num_classes": 3, "cifar_stem": False})
    assert (tmp_path / "r" / "model.json").is_file()
