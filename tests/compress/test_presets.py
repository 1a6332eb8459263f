"""The presets of a slimming run come from the library, and `compress slim` uses exactly those."""

import pytest
from click.testing import CliRunner

from compress.presets import PAPER, QUICK, SlimChoices, paper_sparsity, resolve
from compress.runtime.cpu_features import nchwc_block
from compress.request import PruneRequest, RequestConflict
from compress.sparsity_targeted import TargetedSparsity
from compress.training import Recipe


def test_the_quick_preset_is_the_readmes_run():
    run = resolve("quick")
    assert (run.arch, run.arch_kwargs, run.train_limit, run.test_limit) == ("vgg19", {"width": 0.25}, 10_000, 2_000)
    o = run.options
    assert o.pretrain_recipe == Recipe.named("fast", epochs=5)
    assert o.train_recipe == Recipe.named("fast", epochs=5)
    assert o.finetune_recipe == Recipe.finetuning("fast", epochs=5) and o.finetune_recipe.lr == 0.1
    # Widths in multiples of ONNX Runtime's CPU block here: unrounded, the run's network was slower than the
    # unpruned one on ORT (1.13x at batch 1, 1.19x at 32; benchmarks/results/main_job/README.md).
    block = nchwc_block()
    assert o.prune == PruneRequest(target_macs=0.5, min_keep=0.2, shared="narrow", round_to=block)
    assert o.sparsity == TargetedSparsity() and (o.passes, o.distill) == (1, False)
    # A percent asked replaces the preset's budget, and the targeted pull then prepares that percent.
    assert resolve("quick", SlimChoices(prune={"percent": 0.4})).options.prune == PruneRequest(
        percent=0.4, min_keep=0.2, shared="narrow", round_to=block)


def test_the_paper_preset_keeps_the_papers_lambda_per_architecture():
    assert paper_sparsity("vgg19") == 1e-4 and paper_sparsity("preresnet164") == 1e-5
    assert paper_sparsity("densenet40") == 1e-5
    vgg = resolve(PAPER, SlimChoices(arch="vgg16"))
    assert vgg.options.sparsity == 1e-4 and vgg.arch_kwargs == {} and vgg.train_limit is None
    assert vgg.options.train_recipe == Recipe.named("paper", epochs=160) and vgg.options.pretrain_recipe is None
    assert vgg.options.prune.percent == 0.7
    assert vgg.options.prune.shared == "select"  # the paper's channel selections
    assert vgg.options.prune.round_to == 1  # and its exact widths
    assert resolve("paper", SlimChoices(arch="preresnet164")).options.sparsity == 1e-5


def test_what_is_given_wins_over_the_preset():
    run = resolve(QUICK, SlimChoices(arch="resnet18", from_model=True, epochs=2, finetune_lr=0.05, batch_size=32,
                                     sparsity=1e-4, prune={"target_macs": 0.5, "round_to": 16}, passes=2))
    assert run.arch_kwargs == {}  # the width multiplier is a VGG's, and a model directory brings its own
    assert run.options.pretrain_recipe is None  # a model directory is trained already
    assert run.options.train_recipe.epochs == 2 and run.options.train_recipe.batch_size == 32
    assert run.options.finetune_recipe.lr == 0.05 and run.options.sparsity == 1e-4
    assert run.options.prune == PruneRequest(target_macs=0.5, round_to=16, min_keep=0.5, shared="narrow")  # 0.5 per pass
    assert resolve(QUICK, SlimChoices(prune={"shared": "select"})).options.prune.shared == "select"
    assert resolve(QUICK, SlimChoices(prune={"min_keep": 0.1}, passes=3)).options.prune.min_keep == 0.1
    assert resolve(QUICK, SlimChoices(arch="vgg11", arch_kwargs={"depth": 3})).arch_kwargs == {"depth": 3}


def test_conflicts_are_refused_with_the_options_named():
    with pytest.raises(RequestConflict, match="not percent and target_macs"):
        resolve(QUICK, SlimChoices(prune={"percent": 0.5, "target_macs": 0.5}))
    with pytest.raises(RequestConflict, match="target_latency_ms prunes once: it cannot be split over passes"):
        resolve(QUICK, SlimChoices(prune={"target_latency_ms": 2.0}, passes=2))


def test_compress_slim_runs_what_the_library_preset_says(tmp_path, monkeypatch):
    import compress.stages.slim

    seen = {}

    def fake_slim(arch, data, out, options, **kw):
        seen.update(arch=arch, data=data, out=out, options=options, **kw)
        return {}

    monkeypatch.setattr(compress.stages.slim, "slim", fake_slim)
    monkeypatch.setattr("compress.stages.summary.summary_markdown", lambda s: "")
    from compress.cli import main

    result = CliRunner().invoke(main, ["slim", "--out", str(tmp_path / "q")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = resolve("quick")
    assert seen["options"] == run.options and seen["arch"] == run.arch and seen["arch_kwargs"] == run.arch_kwargs
    assert (seen["data"].spec, seen["data"].train_limit, seen["data"].test_limit) == ("cifar10", 10_000, 2_000)
    assert seen["start_from"] is None and seen["run"].seed == 0
