"""`compress slim`."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import (
    _arch_kwargs,
    _data,
    _percent,
    _run,
    arch_options,
    as_usage,
    budget_options,
    data_options,
    only_without,
    parse_arch_kwargs,
    recipe_options,
    say_round_to,
    shared_option,
)
from compress.cli.params import FINITE, OUT_DIR, ROUND_TO, SPARSITY, FiniteFloat, GivenPath


def next_commands(final, start, out) -> str:
    """The export and paired bench that show the speed-up, as one shell line; with `--trust` given (which
    the command exports as COMPRESS_TRUSTED_CODE for what it starts) the same trust, since both read the
    model directories' arch."""
    import os
    import shlex

    from compress.cli.main import TRUST_ENV

    trusted = os.environ.get(TRUST_ENV, "")
    prefix = "compress" + "".join(f" --trust {shlex.quote(m)}" for m in trusted.split(",") if m.strip())
    onnx = shlex.quote(f"{out}/slim.onnx")
    return (f"{prefix} export {shlex.quote(str(final))} --onnx {onnx} && {prefix} bench {shlex.quote(str(start))} "
            f"{onnx} --batch 1,32 --paired 30")


@click.command("slim")
@click.option("--preset", type=click.Choice(["quick", "paper"]), default="quick", show_default=True,
              help="quick: VGG-19 ×0.25 on 10k images, 5 plain + 5 sparse + 5 fine-tuning epochs (minutes on a "
                   "CPU); paper: full data, paper recipe, λ = 1e-4 (VGG; 1e-5 otherwise), 160 + 160 epochs.")
@click.option("--arch", default=None, help="Architecture (preset: vgg19), or package.module:Class.")
@click.option("--from", "start_from", type=GivenPath(path_type=Path), default=None,
              help="Start sparse training from this model directory's trained weights (see `compress import`).")
@click.option("--out", type=OUT_DIR, default=None,
              help="Run directory (default runs/slim-ARCH).")
@click.option("--percent", type=FINITE, default=None, help="Fraction of channels to prune (paper preset: 0.7; the quick preset prunes to --target-macs 0.5).")
@budget_options(" (one pass; with --sparsity auto or a λ, or --preset paper)")
@click.option("--sparsity", type=SPARSITY, default=None,
              help="'targeted' (the quick preset's: proximal L1 on the γ of the channels the prune will remove only, "
                   "steered to zero), 'auto' (proximal L1 on every γ, steered until the planned percent sits at "
                   "zero), 'budget:P' (proximal, total pull P), or λ of the paper's subgradient L1 on BN γ (paper "
                   "preset: 1e-4 for VGG, 1e-5 otherwise).")
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=None,
              help="Train this many epochs without sparsity first, then sparse-train from that model "
                   "(quick preset: 5; 0 with --from or the paper preset).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Sparse-training epochs.")
@click.option("--finetune-epochs", type=click.IntRange(min=1), default=None,
              help="Fine-tuning epochs (quick preset: 5; paper: 160).")
@click.option("--finetune-lr", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Fine-tuning peak learning rate (default: the recipe's).")
@click.option("--width", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Width multiplier of the toolkit's VGG/ResNet/DenseNet (quick preset: 0.25).")
@click.option("--min-keep", type=FiniteFloat(0, 1), default=None,
              help="Floor: every layer keeps at least this fraction per pruning (default 0.2; 0.5 with --passes > 1).")
@click.option("--round-to", type=ROUND_TO, default=None,
              help="Round kept channels up to a multiple: 8 suits tensor cores; auto is ONNX Runtime's CPU "
                   "convolution block here (16 with AVX-512, 8 with AVX2), which its fast kernels need "
                   "(default: auto for the quick preset, 1 for the paper's).")
@shared_option(None)
@click.option("--sparse-dir", type=GivenPath(file_okay=False, path_type=Path), default=None,
              help="Keep the sparse stage here instead of OUT/sparse. A finished one trained with the same settings "
                   "is reused: with a fixed --sparsity λ, another target for the same sparse model goes into another "
                   "--out with --sparse-dir OUT/sparse (targeted and auto sparsity are steered to the target).")
@click.option("--distill", is_flag=True, help="Fine-tune with the sparse model as teacher.")
@click.option("--passes", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Multi-pass slimming (paper Table 4): prune --percent of the remaining channels per pass, "
                   "at most half of any layer (--min-keep 0.5 unless given), fine-tune after each pass.")
@arch_options
@data_options
@recipe_options(resume_help="Refuse an --out that exists rather than continue the run in it (start over with a "
                             "new --out: slim never deletes stages).")
def slim(preset, arch, start_from, out, percent, target_macs, target_params, target_latency, backend, sparsity,
         pretrain_epochs, epochs, finetune_epochs, finetune_lr, width, min_keep, round_to, shared, sparse_dir, distill,
         passes,
         arch_kwargs_json, data_spec, train_limit, test_limit, seed, input_size, data_mode, lr, batch_size,
         weight_decay, recipe, device, compile_, precision, no_resume):
    """Sparse training → pruning → fine-tuning, in one resumable run.

    \b
      compress slim                                   # the quick preset: VGG-19 ×0.25 on CIFAR-10
      compress slim --from imported/ --data imgs/ --percent 0.4 --out runs/mine
    """
    from compress.artifact import read_meta
    from compress.presets import PRESETS, SlimChoices, resolve
    from compress.stages.slim import checked_options
    from compress.stages.slim import slim as run_slim
    from compress.stages.summary import summary_markdown

    kwargs = {**_arch_kwargs(width, None), **parse_arch_kwargs(arch_kwargs_json)}
    if start_from is not None:
        if kwargs:
            raise click.UsageError("--from takes the architecture from its model directory: drop --arch-kwargs/--width")
        if pretrain_epochs:  # 0 asks for what --from does anyway
            only_without("--from (the run starts from that model: nothing is pre-trained)", start_from,
                         "pretrain_epochs")
        arch = arch or read_meta(start_from)["arch"]
    if percent is not None:
        _percent(percent)
    prune = {"percent": percent, "target_macs": target_macs, "target_params": target_params,
             "target_latency_ms": target_latency, "backend": backend, "min_keep": min_keep,
             "round_to": round_to, "shared": shared}  # None: the preset's, "auto" resolved by the preset
    with as_usage():
        settled = resolve(preset, SlimChoices(
            arch=arch, arch_kwargs=kwargs, from_model=start_from is not None, train_limit=train_limit,
            test_limit=test_limit, pretrain_epochs=pretrain_epochs, epochs=epochs, finetune_epochs=finetune_epochs,
            recipe=recipe, batch_size=batch_size, lr=lr, finetune_lr=finetune_lr, weight_decay=weight_decay,
            sparsity=sparsity, prune=prune, passes=passes, distill=distill))
    with as_usage():
        checked_options(settled.options)  # what slim refuses before any work, refused before the notes below
    say_round_to(round_to or PRESETS[preset].round_to, settled.options.prune.round_to,
                 "" if round_to is not None else f"the {preset} preset's ")
    limited = [f"{n:,} {split}" for n, given, split in ((settled.train_limit, train_limit, "training"),
                                                         (settled.test_limit, test_limit, "test")) if given is None and n]
    if limited:  # the preset's limits on the user's own --data are said, not applied silently
        click.echo(f"{preset} preset: at most {' and '.join(limited)} images of the data "
                   "(--train-limit / --test-limit to use more)", err=True)
    out = out or Path("runs") / f"slim-{settled.arch.replace(':', '.')}"
    if no_resume and Path(out).exists():
        raise click.UsageError(f"--no-resume would mix with the stages already in {out}; choose another --out")
    data = _data(data_spec, settled.train_limit, settled.test_limit, seed, input_size, data_mode)
    summary = run_slim(settled.arch, data, out, settled.options, arch_kwargs=settled.arch_kwargs, start_from=start_from,
                       sparse_dir=sparse_dir, run=_run(device, seed, no_resume, compile_, precision))
    click.echo(summary_markdown(summary))
    final = f"{out}/finetuned" if passes == 1 else f"{out}/pass{passes}/finetuned"
    click.echo(f"Wrote {out}/summary.md; the slimmed model is {final}")
    start = start_from if start_from is not None else (sparse_dir or f"{out}/sparse")
    if settled.options.prune.round_to == 1:
        from compress.stages.prune import unrounded_note

        note = unrounded_note(read_meta(final), read_meta(start).get("widths") or {})
        if note:
            click.echo(note, err=True)
    click.echo("Next, how much faster it runs here (both timed in turns):\n  " + next_commands(final, start, out))
    if preset == "quick" and start_from is None:
        click.echo("The paper's full recipe on a GPU:\n  compress slim --preset paper --arch vgg19 "
                   "--data cifar10 --out runs/vgg19-paper")
