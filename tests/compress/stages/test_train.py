"""The training stage: Scratch-B (`compress train --like PRUNED`, the pruned architecture trained from scratch),
training on from a model directory, and torchrun."""

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from compress.artifact import load_model_dir, save_model_dir
from compress.cli import main
from compress.models import create_model
from compress.request import PruneRequest
from compress.stages.prune import prune
from compress.stages.train import scratch_b_epochs


def test_epochs_follow_the_macs_ratio_capped_at_twice():
    assert scratch_b_epochs(10, 1000, 1000) == 10
    assert scratch_b_epochs(10, 1500, 1000) == 15
    assert scratch_b_epochs(10, 5000, 1000) == 20
    assert scratch_b_epochs(160, 398_000_000, 195_000_000) == 320  # ratio 2.04, capped


@pytest.mark.slow
def test_like_trains_the_pruned_widths_from_fresh_weights(tmp_path, cifar10_archive, monkeypatch):
    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.125)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0, 1)
    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125}, "classes": list("abcdefghij"),
            "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_dir(model, tmp_path / "base", meta)
    pruned = prune(tmp_path / "base", tmp_path / "pruned", PruneRequest(percent=0.5))
    from compress.data import load_dataset

    meta_pruned = json.loads((tmp_path / "pruned" / "model.json").read_text())
    meta_pruned["classes"] = load_dataset("cifar10", "test", limit=10).classes
    (tmp_path / "pruned" / "model.json").write_text(json.dumps(meta_pruned))
    r = CliRunner().invoke(main, ["train", "--like", str(tmp_path / "pruned"), "--epochs", "1", "--recipe", "fast",
                                  "--train-limit", "100", "--test-limit", "50", "--out", str(tmp_path / "scratch")])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "scratch" / "model.json").read_text())
    assert out["widths"] == pruned["widths"]
    expected = scratch_b_epochs(1, pruned["pruning"]["macs_before"], pruned["macs"])
    assert out["scratch_b"]["epochs"] == expected > 1
    assert len((tmp_path / "scratch" / "metrics.jsonl").read_text().splitlines()) == expected
    a, _ = load_model_dir(tmp_path / "pruned")
    b, _ = load_model_dir(tmp_path / "scratch")
    first = next(n for n, p in a.named_parameters() if p.dim() == 4)
    assert not torch.allclose(dict(a.named_parameters())[first], dict(b.named_parameters())[first])
    # Another learning rate or seed is another run: refused, where it used to keep this one.
    for change in (["--lr", "0.01"], ["--seed", "3"]):
        again = CliRunner().invoke(main, ["train", "--like", str(tmp_path / "pruned"), "--epochs", "1", "--recipe",
                                          "fast", "--train-limit", "100", "--test-limit", "50",
                                          "--out", str(tmp_path / "scratch"), *change])
        assert again.exit_code != 0 and "other settings" in again.output, again.output


def test_torchrun_trains_with_two_cpu_processes(tmp_path):
    """DDP over gloo: both ranks step together, rank 0 alone writes the model directory."""
    from tests_support import make_image_folder

    data = make_image_folder(tmp_path / "ds", per_class=24, size=32)
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29577",
         "-m", "compress.cli", "train", "--arch", "vgg11", "--width", "0.125", "--data", str(data),
         "--epochs", "2", "--recipe", "fast", "--batch-size", "8", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                             "COMPRESS_CACHE": str(tmp_path / "cache")}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads((out / "model.json").read_text())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
    # The recorded accuracy is what evaluating the written model gives on the same 2 x 24 test images.
    evaluated = CliRunner().invoke(main, ["eval", str(out), "--data", str(data), "--json"], catch_exceptions=False,
                                   env={"COMPRESS_CACHE": str(tmp_path / "cache")})
    assert evaluated.exit_code == 0, evaluated.output
    obj = json.loads(evaluated.stdout)
    assert obj["images"] == 48 and meta["accuracy"] == pytest.approx(obj["accuracy"], abs=1e-9)


def test_a_finished_stage_is_kept_only_for_the_settings_it_was_trained_with(tmp_path):
    from compress.errors import CompressError
    from compress.stages._run import RunOptions
    from compress.stages.train import _kept

    settings = {"arch": "vgg11", "epochs": 2, "seed": 0, "data": {"spec": "imgs", "input_size": 32}}
    save_model_dir(create_model("vgg11", num_classes=2, width=0.0625), tmp_path / "m",
                   {"arch": "vgg11", "arch_kwargs": {"num_classes": 2, "width": 0.0625}, "classes": ["a", "b"],
                    "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                    "training": {"settings": settings}})
    assert _kept(tmp_path / "m", dict(settings), RunOptions())["training"]["settings"] == settings
    with pytest.raises(CompressError, match=r"holds a model trained with other settings \(data, seed\)"):
        _kept(tmp_path / "m", {**settings, "seed": 1, "data": {"spec": "imgs", "input_size": None}}, RunOptions())


def test_targeted_sparsity_without_a_prune_is_refused_before_any_work(tmp_path):
    """It pulls the channels a prune will remove; `compress train` has no prune, so it names the command
    that has one, in one line, with nothing written and no data read (the spec names no dataset)."""
    result = CliRunner().invoke(main, ["train", "--arch", "vgg11", "--out", str(tmp_path / "m"), "--sparsity",
                                       "targeted", "--data", str(tmp_path / "no-such-dataset")])
    assert result.exit_code != 0
    assert "compress slim --sparsity targeted" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("given", [7, 1])
def test_num_classes_other_than_the_data_s_is_refused_before_training(tmp_path, given, monkeypatch):
    """7 for 2 classes trained, then left a finished-looking folder no command could read (and that a
    corrected rerun resumed into); 1 crashed in the loss with IndexError."""
    from tests_support import make_image_folder

    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    data = make_image_folder(tmp_path / "imgs", per_class=4, size=16)
    r = CliRunner().invoke(main, ["train", "--arch", "vgg11", "--arch-kwargs",
                                  json.dumps({"width": 0.0625, "num_classes": given}), "--data", str(data),
                                  "--epochs", "1", "--recipe", "fast", "--batch-size", "4", "--device", "cpu",
                                  "--out", str(tmp_path / "t")])
    assert r.exit_code == 2 and f"num_classes {given}, but the data has 2 classes" in r.output, r.output
    assert not (tmp_path / "t" / "model.json").exists() and not (tmp_path / "t" / "train_state").exists()


def test_a_refused_batch_size_leaves_a_finished_directory_as_it_was(tmp_path, monkeypatch):
    """fit refused a batch size of 1 only after the stage had removed the finished model.json."""
    from tests_support import make_image_folder

    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    data = make_image_folder(tmp_path / "imgs", per_class=4, size=16)
    args = ["train", "--arch", "vgg11", "--width", "0.0625", "--data", str(data), "--epochs", "1", "--recipe", "fast",
            "--device", "cpu", "--out", str(tmp_path / "t")]
    assert CliRunner().invoke(main, [*args, "--batch-size", "4"]).exit_code == 0
    before = (tmp_path / "t" / "model.json").read_bytes()
    r = CliRunner().invoke(main, [*args, "--batch-size", "1", "--no-resume"])
    assert r.exit_code == 2 and "BatchNorm needs at least 2 images" in r.output, r.output
    assert (tmp_path / "t" / "model.json").read_bytes() == before


@pytest.mark.parametrize("extra, message", [(["--arch", "vgg13"], "--arch vgg13 disagrees with"),
                                            (["--width", "0.5"], "--like takes the architecture and its widths")])
def test_like_refuses_an_architecture_it_would_ignore(tmp_path, extra, message):
    """--like with --arch vgg13 or --width 0.5 trained vgg11 at the pruned widths without a word (--from
    refuses the same options)."""
    torch.manual_seed(0)
    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125}, "classes": list("abcdefghij"),
            "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_model_dir(create_model("vgg11", width=0.125), tmp_path / "base", meta)
    r = CliRunner().invoke(main, ["train", "--like", str(tmp_path / "base"), *extra, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "o" / "model.json").exists()
