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


@pytest.mark.parametrize("option", [["--width", "0.5"], ["--num-classes", "5"]])
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
