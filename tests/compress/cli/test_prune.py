"""`compress prune --shared`: the option reaches the pruning and the plan says which mode made it."""

import json

import pytest
from click.testing import CliRunner
from tests_support import randomize_bn

from compress.artifact import save_model_dir
from compress.cli import main
from compress.models import create_model

META = {"arch": "preresnet20", "arch_kwargs": {"num_classes": 10, "width": 0.5}, "classes": [str(i) for i in range(10)],
        "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}


def test_shared_narrow_leaves_no_channel_selection(tmp_path):
    save_model_dir(randomize_bn(create_model("preresnet20", width=0.5)), tmp_path / "m", dict(META))
    for mode in ("select", "narrow"):
        out = tmp_path / mode
        result = CliRunner().invoke(main, ["prune", str(tmp_path / "m"), "--target-macs", "0.5", "--shared", mode,
                                           "--out", str(out)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "plan.json").read_text())["shared"] == mode
        widths = json.loads((out / "model.json").read_text())["widths"]
        selects = [n for n, w in widths.items() if w["type"] == "SelectBatchNorm2d"]
        assert bool(selects) == (mode == "select")


def test_an_unknown_mode_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["prune", str(tmp_path), "--target-macs", "0.5", "--shared", "gather",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "'gather' is not one of 'select', 'narrow'" in result.output


def test_a_float64_look_that_did_not_run_is_said(tmp_path, monkeypatch):
    from compress.slimming import float64_check

    save_model_dir(randomize_bn(create_model("preresnet20", width=0.5)), tmp_path / "m", dict(META))
    args = ["prune", str(tmp_path / "m"), "--percent", "0.3"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "ran")], catch_exceptions=False)
    assert result.exit_code == 0 and "float64 did not run" not in result.output
    meta = json.loads((tmp_path / "ran" / "model.json").read_text())
    assert set(meta["pruning"]["self_check"]) == {"max_relative_difference", "tolerance", "float64"}
    assert meta["pruning"]["self_check"]["float64"]["max_relative_difference"] <= 1e-10
    monkeypatch.setattr(float64_check, "float64_check", lambda *a, **k: {"not_run": "no float64 on this backend"})
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "not")], catch_exceptions=False)
    assert result.exit_code == 0
    assert ("note: the self-check passed in the model's own dtype, but its repeat in float64 did not run (no "
            "float64 on this backend)") in result.stderr.splitlines()
    assert "note:" not in result.stdout


def test_widths_off_onnx_runtimes_block_are_said(tmp_path, monkeypatch):
    """With exact widths the quick preset's network ran 1.13-1.65x slower than the unpruned one on ONNX
    Runtime's CPU kernels (benchmarks/results/main_job): a prune that leaves such widths says so."""
    import compress.runtime.cpu_features

    monkeypatch.setattr(compress.runtime.cpu_features, "nchwc_block", lambda: 8)
    save_model_dir(randomize_bn(create_model("preresnet20", width=0.5)), tmp_path / "m", dict(META))
    args = ["prune", str(tmp_path / "m"), "--percent", "0.3"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "exact")], catch_exceptions=False)
    assert result.exit_code == 0
    widths = json.loads((tmp_path / "exact" / "model.json").read_text())["widths"].values()
    convs = [w for w in widths if w["type"] == "Conv2d"]
    off = sum(1 for w in convs if w["out_channels"] % 8)
    assert off and (f"note: {off} of {len(convs)} convolutions keep a width that is not a multiple of 8, ONNX Runtime's CPU "
                    "convolution block here") in result.stderr
    result = CliRunner().invoke(main, [*args, "--round-to", "auto", "--out", str(tmp_path / "rounded")],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "not a multiple" not in result.output
    from compress.stages.prune import unrounded_note

    unpruned = json.loads((tmp_path / "m" / "model.json").read_text())["widths"]
    rounded = json.loads((tmp_path / "rounded" / "model.json").read_text())
    assert unrounded_note(rounded, unpruned, 8) is None  # the widths themselves, not only the option
    assert unrounded_note(json.loads((tmp_path / "exact" / "model.json").read_text()), unpruned, 8) is not None
    # A convolution pruning left whole (a head's width) is not rounding's to change.
    assert unrounded_note({"widths": {"head": {"type": "Conv2d", "out_channels": 85}}},
                          {"head": {"type": "Conv2d", "out_channels": 85}}, 8) is None


@pytest.mark.parametrize("option", [["--device", "cpu"], ["--recalibrate", "500"], ["--test-limit", "4"]])
def test_options_for_data_without_data_are_a_usage_error(tmp_path, option):
    """prune --device, --recalibrate and --test-limit without --data were silently ignored (the help of
    --recalibrate says it needs --data): pruning itself runs on the CPU and measures nothing."""
    save_model_dir(randomize_bn(create_model("preresnet20", width=0.5)), tmp_path / "m", dict(META))
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m"), "--percent", "0.3", *option,
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{option[0]} only applies with --data: add --data, or drop {option[0]}" in result.output
    assert not (tmp_path / "o").exists()
