"""`compress info`: --json prints one object with integer counts."""

import json

import pytest
from click.testing import CliRunner

from compress.cli import main


def run(args, **kw):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kw)


def test_info_json_is_one_object_with_integer_counts():
    result = run(["info", "vgg19", "--json"])
    assert result.exit_code == 0
    obj = json.loads(result.stdout)
    assert obj["params"] == 20_035_018 and obj["macs"] == 398_136_320 and obj["flops"] == 2 * obj["macs"]
    assert all(isinstance(obj[k], int) for k in ("params", "macs", "flops"))


@pytest.mark.parametrize("option", [["--width", "0.5"], ["--num-classes", "5"], ["--input-size", "64"],
                                    ["--arch-kwargs", "{}"]])
def test_options_for_an_architecture_name_are_refused_for_a_directory_or_file(tmp_path, option):
    """`compress info m1 --width 0.5` printed m1's own counts: the width was silently ignored."""
    from compress.artifact import save_model_dir
    from compress.models import create_model

    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125}, "classes": list("abcdefghij"),
            "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_dir(create_model("vgg11", width=0.125), tmp_path / "m", meta)
    for target in (tmp_path / "m", tmp_path / "x.onnx"):
        result = CliRunner().invoke(main, ["info", str(target), *option])
        assert result.exit_code == 2 and "holds its own architecture" in result.output, result.output
    assert run(["info", "vgg11", *option, "--json"]).exit_code == 0


def test_a_mistyped_path_is_named_as_a_path_not_an_architecture(tmp_path):
    """It said "unknown architecture 'runs/x/finetunde'; see available_models()": a Python function."""
    result = CliRunner().invoke(main, ["info", str(tmp_path / "runs" / "finetunde")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'runs' / 'finetunde'}: no such model directory or .onnx file" in result.output
    assert "architecture" not in result.output


def test_an_architecture_is_counted_at_the_size_asked_and_says_so():
    """MACs by architecture name were always counted at 32×32, and the text did not say so: a 224-pixel
    network's MACs read 49 times too small."""
    small, large = (json.loads(run(["info", "vgg11", "--json", *size]).stdout) for size in ([], ["--input-size", "64"]))
    assert small["input_size"] == [3, 32, 32] and large["input_size"] == [3, 64, 64]
    assert small["params"] == large["params"] and 3.5 * small["macs"] < large["macs"] <= 4 * small["macs"]
    assert "MACs at 3×64×64," in run(["info", "vgg11", "--input-size", "64"]).stdout
    # From 64 px a torchvision network is built with its own stem, as `compress import` builds it.
    own = json.loads(run(["info", "resnet18", "--input-size", "64", "--json"]).stdout)
    assert (own["params"], own["macs"]) == (11_181_642, 148_050_944)


def test_constructor_arguments_are_given_with_arch_kwargs_once():
    """`info timm:create_model` said "give them in arch_kwargs", which info had no option for."""
    pytest.importorskip("timm")
    missing = CliRunner().invoke(main, ["info", "timm:create_model"])
    assert missing.exit_code == 2 and "--arch-kwargs on the command line" in missing.output
    built = run(["info", "timm:create_model", "--arch-kwargs", '{"model_name": "resnet18"}', "--json"])
    assert json.loads(built.stdout)["params"] == 11_181_642  # timm's resnet18 with 10 classes
    twice = CliRunner().invoke(main, ["info", "vgg11", "--width", "0.5", "--arch-kwargs", '{"width": 0.25}'])
    assert twice.exit_code == 2 and "width is given twice, as --width and in arch_kwargs" in twice.output
