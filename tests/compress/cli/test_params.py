"""Click parameter types that validate numbers at the edge (compress/cli/params.py)."""

import click
import pytest


def test_sparsity_option_takes_lambda_auto_or_a_budget():
    from compress.cli.params import SPARSITY
    from compress.sparsity import Budget, SparsityConfig

    assert SPARSITY.convert("1e-4", None, None) == 1e-4
    auto = SPARSITY.convert("auto", None, None)
    assert isinstance(auto, SparsityConfig) and auto.mode == "proximal" and auto.strength == "auto"
    assert SPARSITY.convert("budget:2", None, None).strength == Budget(2.0)
    for bad in ("nan", "-1", "budget:0", "budget:inf", "lots"):
        with pytest.raises(click.BadParameter):
            SPARSITY.convert(bad, None, None)


def test_round_to_option_takes_a_whole_number_or_auto():
    from compress.cli.params import ROUND_TO

    assert ROUND_TO.convert("16", None, None) == 16 and ROUND_TO.convert(8, None, None) == 8
    assert ROUND_TO.convert(" AUTO ", None, None) == "auto"
    for bad in ("0", "-8", "1.5", "nan", "sixteen"):
        with pytest.raises(click.BadParameter):
            ROUND_TO.convert(bad, None, None)


def test_device_option_refuses_what_this_machine_cannot_run():
    """--device bogus was taken as given and failed only after the data was loaded."""
    from compress.cli.params import DEVICE

    assert DEVICE.convert(" cpu ", None, None) == "cpu"
    with pytest.raises(click.BadParameter, match="'bogus' is not a device name"):
        DEVICE.convert("bogus", None, None)


@pytest.mark.parametrize("command", [["train", "--arch", "vgg11", "--out", "o"], ["slim", "--out", "o"],
                                     ["finetune", "m", "--out", "o"], ["eval", "m"], ["import", "w.pt", "--arch",
                                     "vgg11", "--out", "o"], ["share", "m", "--out", "o"],
                                     ["prune", "m", "--percent", "0.3", "--data", "d", "--out", "o"]])
def test_every_device_option_is_checked_before_any_work(command, tmp_path, monkeypatch):
    """eval, finetune, import and share failed late on --device bogus; prune ignored it."""
    from click.testing import CliRunner

    from compress.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*command, "--device", "bogus"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--device': device 'bogus' is not a device name" in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_empty_path_is_refused_not_read_as_the_current_directory():
    """Path('') is '.', so an empty path argument named the current directory."""
    from pathlib import Path

    from compress.cli.params import GivenPath

    assert GivenPath().convert("m", None, None) == Path("m")
    for bad in ("", "  "):
        with pytest.raises(click.BadParameter, match="an empty path would be read as the current directory"):
            GivenPath().convert(bad, None, None)


@pytest.mark.parametrize("command", [["info", ""], ["eval", ""], ["prune", "", "--percent", "0.3", "--out", "o"],
                                     ["finetune", "", "--out", "o"], ["quantize", "", "--out", "o.onnx"],
                                     ["export", "", "--onnx", "o.onnx"], ["import", "", "--arch", "vgg11", "--out", "o"],
                                     ["share", "", "--out", "o"], ["bench", ""], ["train", "--from", "", "--out", "o"],
                                     ["share", "--decompress", "", "--out", "o"]])
def test_every_path_argument_refuses_an_empty_path(command, tmp_path, monkeypatch):
    """compress info "" said ". is not a model directory"; other commands took '' as the current directory."""
    from click.testing import CliRunner

    from compress.cli import main

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1].endswith("an empty path would be read as the current directory" + (
        "; give a model directory, an .onnx file or an architecture name" if command[0] == "info" else ""))
    assert list(tmp_path.iterdir()) == []
