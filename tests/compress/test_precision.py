import json

import pytest
import torch

import compress
from compress import precision as prec
from compress.errors import CompressError
from compress.models import create_model
from compress.training import FitOptions, Recipe, fit

from tests_support import tiny_data


def test_auto_is_bf16_on_a_gpu_and_fp32_on_a_cpu_and_the_others_mean_what_they_say():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert prec.resolved("auto", cpu) == "fp32" and prec.resolved("auto", cuda) == "bf16"
    assert prec.resolved("bf16", cpu) == "bf16" and prec.resolved("fp32", cuda) == "fp32"


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None, True])
def test_an_unknown_precision_is_refused_before_any_work(bad):
    with pytest.raises(CompressError, match="precision must be one of auto, bf16, fp32"):
        compress.RunOptions(precision=bad)
    with pytest.raises(CompressError, match="precision must be one of"):
        FitOptions(precision=bad)


def test_the_cli_offers_exactly_the_library_s_precisions():
    import click

    from compress.cli import main

    for name in ("train", "slim", "finetune"):
        command = main.get_command(click.Context(main), name)
        option = next(p for p in command.params if p.name == "precision")
        assert tuple(option.type.choices) == prec.PRECISIONS


def test_bf16_autocast_runs_convolutions_in_bf16_on_a_cpu_and_fp32_does_not(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    conv, x = torch.nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8)
    with prec.autocast_for("bf16", torch.device("cpu")):
        assert conv(x).dtype == torch.bfloat16
    with prec.autocast_for("auto", torch.device("cpu")):
        assert conv(x).dtype == torch.float32


def test_bf16_on_a_cpu_without_bf16_instructions_warns_that_it_is_emulated(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="no native bf16 instructions"):
        prec.autocast_for("bf16", torch.device("cpu"))


def test_the_capability_check_reads_torch_s_cpuinfo(monkeypatch):
    prec.cpu_has_native_bf16.cache_clear()
    try:
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512_bf16": False}, raising=False)
        assert prec.cpu_has_native_bf16() is False
        prec.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True}, raising=False)
        assert prec.cpu_has_native_bf16() is True
        # An older torch without get_capabilities: its private x86 probes answer.
        prec.cpu_has_native_bf16.cache_clear()
        monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
        assert prec.cpu_has_native_bf16() is True
        prec.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        assert prec.cpu_has_native_bf16() is False
    finally:
        prec.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("precision,trained_in", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_runs_its_convolutions_in_the_precision_asked_and_keeps_fp32_weights(tmp_path, monkeypatch,
                                                                                        precision, trained_in):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)  # no warning on CPUs without
    data = tiny_data()
    model = create_model("vgg11", num_classes=4, width=0.125)
    seen = []  # (training?, output dtype) of the first convolution, every call (not its copy's: fit's pre-check)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: seen.append((m.training, o.dtype)) if m is conv else None)
    kwargs = dict(mean=[0.5] * 3, std=[0.25] * 3, progress=False, device="cpu")
    result = fit(model, data, data, tmp_path / "run", Recipe.named("fast", epochs=1, batch_size=16),
                 precision=precision, **kwargs)
    assert result["precision"] == precision and result["history"][0]["precision"] == precision
    assert {dtype for training, dtype in seen if training} == {trained_in}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # the test set: fp32 on a CPU
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def _stop_at(epoch):
    def stop(record):
        if record["epoch"] == epoch:
            raise KeyboardInterrupt
    return stop


def test_a_run_interrupted_in_bf16_and_resumed_in_fp32_is_recorded_as_both(tmp_path, monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    data = tiny_data()
    recipe = Recipe.named("fast", epochs=2, batch_size=16)
    kwargs = dict(mean=[0.5] * 3, std=[0.25] * 3, progress=False, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / "run", recipe,
            precision="bf16", on_epoch=_stop_at(1), **kwargs)
    result = fit(create_model("vgg11", num_classes=4, width=0.125), data, data, tmp_path / "run", recipe,
                 precision="fp32", **kwargs)
    assert [r["precision"] for r in result["history"]] == ["bf16", "fp32"]
    assert result["precision"] == "bf16+fp32"


def test_the_cli_trains_in_the_precision_asked_and_model_json_says_which(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from tests_support import make_image_folder

    from compress.cli import main

    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    data = make_image_folder(tmp_path / "ds", per_class=8, size=32)
    common = ["train", "--arch", "vgg11", "--width", "0.0625", "--data", str(data), "--epochs", "1",
              "--batch-size", "8", "--device", "cpu"]
    env = {"COMPRESS_CACHE": str(tmp_path / "cache")}
    for asked, recorded in (("bf16", "bf16"), ("auto", "fp32")):
        out = tmp_path / asked
        result = CliRunner().invoke(main, [*common, "--precision", asked, "--out", str(out)], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "model.json").read_text())["training"]["precision"] == recorded
    refused = CliRunner().invoke(main, [*common, "--precision", "fp16", "--out", str(tmp_path / "x")], env=env)
    assert refused.exit_code == 2 and "'fp16' is not one of" in refused.output
    assert not (tmp_path / "x").exists()
    # Fine-tuning records its own precision; a finished stage asked again in another one is kept as it was,
    # and the run says so.
    tune = ["finetune", str(tmp_path / "auto"), "--data", str(data), "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--out", str(tmp_path / "tuned")]
    result = CliRunner().invoke(main, [*tune, "--precision", "bf16"], env=env)
    assert result.exit_code == 0, result.output
    tuned = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert tuned["training"]["precision"] == "bf16"
    again = CliRunner().invoke(main, [*tune, "--precision", "fp32"], env=env)
    assert again.exit_code == 0, again.output
    assert "kept as trained, in bf16: --precision fp32 (fp32) applies only to a new run" in again.output
    assert json.loads((tmp_path / "tuned" / "model.json").read_text()) == tuned
