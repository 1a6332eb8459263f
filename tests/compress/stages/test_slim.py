"""The slimming run: `compress slim` end to end on real CIFAR-10 images, resumed, re-run with another percent;
the paper's multi-pass scheme (`--passes N`); and the options it refuses before any training."""

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from compress.cli import main


def run(args, **kw):
    return CliRunner().invoke(main, args, catch_exceptions=False, **kw)




@pytest.mark.slow
def test_three_passes_prune_further_each_time_and_resume(tmp_path, cifar10_archive, monkeypatch):
    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    out = tmp_path / "run"
    args = ["slim", "--arch", "vgg11", "--width", "0.125", "--train-limit", "200", "--test-limit", "100",
            "--pretrain-epochs", "0", "--epochs", "1", "--finetune-epochs", "1", "--percent", "0.3", "--passes", "3",
            "--out", str(out)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passes"] == 3
    names = list(summary["stages"])
    assert names == ["sparse", "pruned-1", "finetuned-1", "pruned-2", "finetuned-2", "pruned-3", "finetuned-3"]
    params = [summary["stages"][f"pruned-{k}"]["params"] for k in (1, 2, 3)]
    assert params[0] > params[1] > params[2]
    # Each pass prunes the previous pass's fine-tuned model, and no layer loses more than half per pass.
    for k in (2, 3):
        pruned = json.loads((out / f"pass{k}" / "pruned" / "model.json").read_text())
        tuned_before = json.loads((out / f"pass{k - 1}" / "finetuned" / "model.json").read_text())
        assert pruned["parent"]["sha256"] == tuned_before["weights_sha256"]
        plan = json.loads((out / f"pass{k}" / "pruned" / "plan.json").read_text())
        assert all(g["channels_after"] * 2 >= g["channels_before"] for g in plan["groups"])
    md = (out / "summary.md").read_text()
    assert "3 passes" in md and "finetuned-3" in md
    assert summary["plots"] == ["gamma_histogram.png", "kept_channels-1.png", "kept_channels-2.png",
                                "kept_channels-3.png", "training_curves.png"]
    for name in summary["plots"]:
        assert (out / name).stat().st_size > 1000 and f"]({name})" in md
    # Intermediate fine-tunings keep the sparsity penalty, the last one does not.
    assert json.loads((out / "pass1" / "finetuned" / "metrics.jsonl").read_text().splitlines()[0])[
        "sparsity_lambda"] > 0
    assert json.loads((out / "pass3" / "finetuned" / "metrics.jsonl").read_text().splitlines()[0])[
        "sparsity_lambda"] == 0

    # Interrupted during pass 2's fine-tuning: finished stages are kept, the rest is redone.
    kept = {p: (out / p / "model.json").stat().st_mtime_ns for p in ("sparse", "pass1/finetuned", "pass2/pruned")}
    (out / "pass2" / "finetuned" / "model.json").unlink()
    shutil.rmtree(out / "pass3")
    (out / "summary.json").unlink()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    for p, stamp in kept.items():
        assert (out / p / "model.json").stat().st_mtime_ns == stamp, p
    assert (out / "pass3" / "finetuned" / "model.json").exists()
    assert json.loads((out / "summary.json").read_text())["stages"]["pruned-3"]["params"] == params[2]


def test_percent_outside_the_unit_interval_is_refused(tmp_path):
    result = CliRunner().invoke(main, ["slim", "--percent", "1.5", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "(0, 1)" in result.output
    assert not (tmp_path / "x").exists()



@pytest.mark.parametrize("stage", ["finetuned", "pruned", "sparse", "sparse/inner"])
def test_starting_from_a_stage_this_run_writes_is_refused_before_any_work(tmp_path, stage):
    """`--from OUT/finetuned --out OUT` fine-tuned into its own input: the user's weights were overwritten
    (the top-level guard saw only OUT)."""
    from compress.artifact import save_model_dir
    from compress.models import create_model

    start = tmp_path / "run" / stage
    save_model_dir(create_model("vgg11", num_classes=2, width=0.0625), start,
                   {"arch": "vgg11", "arch_kwargs": {"num_classes": 2, "width": 0.0625}, "classes": ["a", "b"],
                    "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    before = {f.name: f.read_bytes() for f in start.iterdir()}
    result = CliRunner().invoke(main, ["slim", "--from", str(start), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "a stage this run writes" in result.output, result.output
    assert {f.name: f.read_bytes() for f in start.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [stage.split("/")[0]]


def test_a_latency_target_under_targeted_sparsity_is_refused_before_any_training(tmp_path, monkeypatch):
    # The quick preset's targeted sparsity decides what to pull during training, where there is no pruned
    # network to time: refused at once, not after the plain stage.
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path / "no-data-needed.tar.gz"))
    result = CliRunner().invoke(main, ["slim", "--arch", "vgg11", "--width", "0.125", "--target-latency", "1",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "give --sparsity auto or a λ (or --preset paper) with --target-latency" in result.output
    assert result.output.count("\n") <= 2 and not (tmp_path / "x").exists()

@pytest.mark.slow
def test_tiny_slim_end_to_end_on_real_cifar10(tmp_path, cifar10_archive, monkeypatch):
    monkeypatch.setenv("COMPRESS_DATA", str(cifar10_archive))
    out = tmp_path / "run"
    args = ["slim", "--arch", "vgg11", "--width", "0.25", "--train-limit", "400", "--test-limit", "200",
            "--pretrain-epochs", "1", "--sparsity", "1e-4", "--epochs", "2", "--finetune-epochs", "1", "--percent", "0.5", "--out", str(out)]
    result = run(args)
    assert result.exit_code == 0, result.output
    assert "did not run" not in result.output  # the self-check's float64 look ran
    tuned_check = json.loads((out / "finetuned" / "model.json").read_text())["pruning"]["self_check"]
    assert tuned_check["float64"]["max_relative_difference"] <= tuned_check["float64"]["tolerance"] == 1e-10
    for stage in ("pretrained", "sparse", "pruned", "finetuned"):
        assert (out / stage / "model.json").exists() and (out / stage / "model.safetensors").exists()
        assert not (out / stage / "train_state").exists()
    # Sparse training continued from the plain pre-training.
    sparse_meta = json.loads((out / "sparse" / "model.json").read_text())
    assert sparse_meta["parent"]["sha256"] == json.loads((out / "pretrained" / "model.json").read_text())[
        "weights_sha256"]
    assert sparse_meta["training"]["sparsity"] == 1e-4
    summary = json.loads((out / "summary.json").read_text())
    st = summary["stages"]
    assert st["pruned"]["params"] < st["sparse"]["params"] and st["pruned"]["macs"] < st["sparse"]["macs"]
    acc = st["finetuned"]["accuracy"]
    assert round(acc * 200) == pytest.approx(acc * 200, abs=1e-9)  # a count of 200 test images, not a made-up figure
    assert len((out / "sparse" / "metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "summary.md").read_text().startswith("# Slimming summary")

    # Re-running the finished command redoes nothing.
    stamp = (out / "finetuned" / "model.json").stat().st_mtime_ns
    assert run(args).exit_code == 0
    assert (out / "finetuned" / "model.json").stat().st_mtime_ns == stamp

    evaluated = run(["eval", str(out / "finetuned"), "--test-limit", "200", "--json"])
    obj = json.loads(evaluated.stdout)
    assert obj["accuracy"] == pytest.approx(st["finetuned"]["accuracy"], abs=1e-6)

    replay = run(["prune", str(out / "sparse"), "--plan", str(out / "pruned" / "plan.json"), "--out",
                  str(tmp_path / "replayed")])
    assert replay.exit_code == 0, replay.output
    a = json.loads((out / "pruned" / "model.json").read_text())
    b = json.loads((tmp_path / "replayed" / "model.json").read_text())
    assert a["widths"] == b["widths"]
    kept = [g["kept"] for g in json.loads((out / "pruned" / "plan.json").read_text())["groups"]]
    assert kept == [g["kept"] for g in json.loads((tmp_path / "replayed" / "plan.json").read_text())["groups"]]
    # Without data there is no BN recalibration: a replay without data equals itself, bit for bit.
    assert run(["prune", str(out / "sparse"), "--plan", str(out / "pruned" / "plan.json"), "--out",
                str(tmp_path / "replayed2")]).exit_code == 0
    c = json.loads((tmp_path / "replayed2" / "model.json").read_text())
    assert c["weights_sha256"] == b["weights_sha256"]

    info = json.loads(run(["info", str(out / "pruned"), "--json"]).stdout)
    assert info["params"] == st["pruned"]["params"]

    # Another percent on the same run directory replaced its finished prune and fine-tuned model; it is
    # refused, and the same sparse model serves another --out through --sparse-dir.
    sparse_stamp = (out / "sparse" / "model.json").stat().st_mtime_ns
    other = [a if a != "0.5" else "0.9" for a in args]
    refused_percent = run(other)
    assert refused_percent.exit_code == 2 and "holds a prune made with other settings" in refused_percent.output
    assert (out / "finetuned" / "model.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "summary.json").read_text())["percent"] == 0.5
    beside = tmp_path / "run-0.9"
    shared = run([*[a if a != str(out) else str(beside) for a in other], "--sparse-dir", str(out / "sparse")])
    assert shared.exit_code == 0, shared.output
    assert json.loads((beside / "summary.json").read_text())["percent"] == 0.9
    assert (out / "sparse" / "model.json").stat().st_mtime_ns == sparse_stamp
    finetuned = json.loads((beside / "finetuned" / "model.json").read_text())
    pruned = json.loads((beside / "pruned" / "model.json").read_text())
    assert finetuned["parent"]["sha256"] == pruned["weights_sha256"]

    refused = CliRunner().invoke(main, [*args, "--no-resume"])
    assert refused.exit_code != 0 and "--no-resume" in refused.output


def test_a_rerun_stopped_halfway_leaves_no_summary_of_the_last_run(tmp_path, monkeypatch):
    """summary.json marks a finished run; a rerun with another percent killed during a stage left the
    previous run's summary (percent 0.5) beside the new stages (percent 0.3)."""
    out = _last_run(tmp_path)

    def stopped_after_writing(*args, **kwargs):
        (out / "sparse" / "model.json").write_text('{"another": "run"}')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _slim_with(tmp_path, monkeypatch, out, stopped_after_writing)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["sparse"]


def test_a_rerun_stopped_before_it_changed_anything_keeps_the_last_runs_summary(tmp_path, monkeypatch):
    """Ctrl-C before the first stage wrote left the finished run's summary hidden as .previous-*."""
    out = _last_run(tmp_path)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _slim_with(tmp_path, monkeypatch, out, stopped)
    for name in ("summary.json", "summary.md", "gamma_histogram.png", "kept_channels.png"):
        assert (out / name).read_text() == "the last run's", name
    assert not list(out.glob(".previous-*"))


@pytest.mark.parametrize("floor", [["--min-keep", "1"], ["--round-to", "64"]])
def test_a_floor_that_keeps_every_channel_is_refused_before_any_training(tmp_path, floor):
    """`slim --min-keep 1` trained its sparse stage, then was refused at the prune."""
    result = CliRunner().invoke(main, ["slim", "--arch", "vgg11", "--width", "0.125", "--data",
                                       str(tmp_path / "no-data-needed"), "--percent", "0.5", "--preset", "paper",
                                       *floor, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "keeps every channel of every layer of VGG: pruning would remove nothing after training" in result.output
    assert not (tmp_path / "x").exists()


def _last_run(tmp_path):
    out = tmp_path / "run"
    (out / "sparse").mkdir(parents=True)
    (out / "sparse" / "model.json").write_text("{}")
    for name in ("summary.json", "summary.md", "gamma_histogram.png", "kept_channels.png"):
        (out / name).write_text("the last run's")
    return out


def _slim_with(tmp_path, monkeypatch, out, stage):
    import compress.stages.slim as slim_stage
    from compress.data.options import DataOptions
    from compress.recipe import Recipe

    monkeypatch.setattr(slim_stage, "train", stage)
    recipe = Recipe.named("fast", epochs=1, batch_size=4)
    return slim_stage.slim("vgg11", DataOptions(str(tmp_path / "imgs")), out,
                           slim_stage.SlimOptions(train_recipe=recipe, finetune_recipe=recipe))


def test_a_rerun_refused_before_it_changed_anything_keeps_the_last_runs_summary(tmp_path, monkeypatch):
    """A rerun with other settings is refused at its first stage; it used to delete the finished run's
    summary and plots on the way in."""
    from compress.errors import CompressError

    out = _last_run(tmp_path)

    def refused(*args, **kwargs):
        raise CompressError(f"{out / 'sparse'} holds a model trained with other settings (recipe)")

    with pytest.raises(CompressError, match="other settings"):
        _slim_with(tmp_path, monkeypatch, out, refused)
    for name in ("summary.json", "summary.md", "gamma_histogram.png", "kept_channels.png"):
        assert (out / name).read_text() == "the last run's", name
    assert not list(out.glob(".previous-*"))


def test_a_rerun_refused_after_a_stage_wrote_leaves_no_summary_of_the_last_run(tmp_path, monkeypatch):
    from compress.errors import CompressError

    out = _last_run(tmp_path)

    def wrote_then_refused(*args, **kwargs):
        (out / "sparse" / "model.json").write_text('{"another": "run"}')
        raise CompressError("refused halfway")

    with pytest.raises(CompressError, match="halfway"):
        _slim_with(tmp_path, monkeypatch, out, wrote_then_refused)
    assert not (out / "summary.json").exists() and not (out / "kept_channels.png").exists()


def test_a_floor_above_the_macs_target_is_refused_before_any_training(tmp_path):
    """Rounding to 64 on VGG-11 ×0.125 keeps every layer of up to 64 channels whole, more than half the MACs:
    the run trained its stages and was refused at the prune ("cannot be met")."""
    result = CliRunner().invoke(main, ["slim", "--arch", "vgg11", "--width", "0.25", "--data",
                                       str(tmp_path / "no-data-needed"), "--target-macs", "0.3", "--round-to", "32",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "of the MACs of VGG: target_macs 0.3 cannot be met after training" in result.output
    assert not (tmp_path / "x").exists()


def test_the_quick_preset_rounds_says_its_limits_and_ends_with_the_speed_check(tmp_path, monkeypatch):
    """What `compress slim` prints around the run: the rounding it chose (ONNX Runtime's block here), the
    preset's image limits when none were given, and the export + paired bench that show the speed-up,
    with the --trust the run was given."""
    import compress.stages.slim
    from compress.runtime.cpu_features import nchwc_block

    seen = {}
    def fake_slim(*args, **kwargs):
        seen["options"] = args[3]
        return {}

    monkeypatch.setattr(compress.stages.slim, "slim", fake_slim)
    monkeypatch.setattr("compress.stages.summary.summary_markdown", lambda s: "")
    monkeypatch.delenv("COMPRESS_TRUSTED_CODE", raising=False)
    result = CliRunner().invoke(main, ["--trust", "mymodule", "slim", "--out", str(tmp_path / "q")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    block = nchwc_block()
    assert seen["options"].prune.round_to == block
    lines = result.stderr.splitlines()
    assert lines[:2] == [f"the quick preset's --round-to auto: {block} (ONNX Runtime's CPU convolution block on "
                         "this machine)",
                         "quick preset: at most 10,000 training and 2,000 test images of the data (--train-limit / "
                         "--test-limit to use more)"]
    q = tmp_path / "q"
    assert (f"  compress --trust mymodule export {q}/finetuned --onnx {q}/slim.onnx && compress --trust mymodule "
            f"bench {q}/sparse {q}/slim.onnx --batch 1,32 --paired 30") in result.stdout.splitlines()


def test_a_sparse_dir_that_is_a_run_or_another_stage_is_refused_before_any_work(tmp_path):
    """`--sparse-dir RUN` (not RUN/sparse) wrote a model directory among another run's summary and stages."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    common = ["slim", "--arch", "vgg11", "--width", "0.0625", "--data", str(tmp_path / "nothing-read"),
              "--sparsity", "1e-4", "--percent", "0.3"]
    for out, sparse_dir in ((tmp_path / "new", tmp_path / "run"), (tmp_path / "new", tmp_path / "new" / "pruned"),
                            (tmp_path / "new", tmp_path / "new")):
        result = run([*common, "--out", str(out), "--sparse-dir", str(sparse_dir)])
        assert result.exit_code == 2 and "is a run folder or another stage" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and os.listdir(tmp_path / "run") == ["summary.json"]
