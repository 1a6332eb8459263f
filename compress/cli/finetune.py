"""`compress finetune`."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import _data, _recipe, _run, data_options, only_with, recipe_options
from compress.cli.params import OUT_DIR, FiniteFloat, GivenPath


@click.command("finetune")
@click.argument("model_dir", type=GivenPath(path_type=Path))
@click.option("--out", type=OUT_DIR, required=True, help="Model directory to write.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs (recipe default otherwise: paper 160, fast 30).")
@click.option("--distill", "distill_dir", type=GivenPath(path_type=Path), default=None,
              help="Teacher model directory: learn from its soft targets too (Hinton et al.).")
@click.option("--temperature", type=FiniteFloat(min=0, min_open=True), default=4.0, show_default=True,
              help="Softmax temperature of the soft targets (with --distill).")
@click.option("--alpha", type=FiniteFloat(0, 1), default=0.9, show_default=True,
              help="Weight of the soft-target loss.")
@data_options
@recipe_options()
def finetune(model_dir, out, epochs, distill_dir, temperature, alpha, data_spec, train_limit, test_limit, seed,
             input_size, data_mode, lr,
             batch_size, weight_decay, recipe, device, compile_, precision, no_resume):
    """Fine-tune a (pruned) model directory."""
    from compress.stages.finetune import finetune as run_finetune

    only_with("--distill", distill_dir, "temperature", "alpha")
    meta = run_finetune(model_dir, _data(data_spec, train_limit, test_limit, seed, input_size, data_mode), out,
                        _recipe(recipe, epochs, batch_size, lr, weight_decay), distill_dir=distill_dir,
                        temperature=temperature, alpha=alpha, run=_run(device, seed, no_resume, compile_, precision))
    click.echo(f"{out}: test accuracy {meta['accuracy']:.2%}")
