"""`compress train`."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import (
    _arch_kwargs,
    _data,
    _recipe,
    _run,
    arch_options,
    data_options,
    parse_arch_kwargs,
    recipe_options,
)
from compress.cli.params import OUT_DIR, SPARSITY, FiniteFloat, GivenPath


@click.command("train")
@click.option("--arch", default=None, help="vgg11/13/16/19, preresnet<9n+2>, densenet<3n+4>, torchvision names, "
                                           "or package.module:Class for your own nn.Module.")
@click.option("--from", "start_from", type=GivenPath(path_type=Path), default=None,
              help="Continue from this model directory's weights (e.g. made by `compress import`).")
@click.option("--like", "like", type=GivenPath(path_type=Path), default=None,
              help="Scratch-B: train this pruned model directory's architecture from scratch, with --epochs "
                   "scaled by its MACs ratio (at most 2×), to see whether the inherited weights mattered.")
@click.option("--out", type=OUT_DIR, required=True, help="Model directory.")
@click.option("--sparsity", type=SPARSITY, default="0", show_default=True,
              help="λ of the L1 penalty on BN γ (paper: 1e-4 VGG, 1e-5 ResNet/DenseNet); 'auto' "
                   "(proximal, λ steered until half the γ sit at zero) or 'budget:P'; 'targeted' needs the "
                   "prune it prepares for, so only `compress slim` takes it.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (recipe default otherwise).")
@click.option("--width", type=FiniteFloat(min=0, min_open=True), default=None, help="VGG width multiplier.")
@click.option("--bn-init", type=FiniteFloat(min=-1e4, max=1e4), default=None,
              help="Initial BN γ (default 0.5 as in the paper).")
@arch_options
@data_options
@recipe_options()
def train(arch, start_from, like, out, sparsity, epochs, width, bn_init, arch_kwargs_json, data_spec, train_limit,
          test_limit, seed, input_size, data_mode, lr, batch_size, weight_decay, recipe, device, compile_, precision,
          no_resume):
    """Train a network, optionally with the L1 sparsity penalty on BN γ.

    \b
      compress train --arch vgg19 --out runs/vgg19 --sparsity 1e-4
      compress train --arch mymodule:MyNet --arch-kwargs '{"width": 32}' --input-size 64 --data imgs/ --out m
      compress train --from imported/ --sparsity 1e-4 --data imgs/ --out sparse/
    """
    from compress.stages.train import train as run_train

    if arch is None and start_from is None and like is None:
        raise click.UsageError("give --arch, --from a model directory, or --like a pruned one")
    kwargs = {**_arch_kwargs(width, bn_init), **parse_arch_kwargs(arch_kwargs_json)}
    if start_from is not None and kwargs:
        raise click.UsageError("--from takes the architecture from its model directory: drop --arch-kwargs/--width")
    meta = run_train(arch, _data(data_spec, train_limit, test_limit, seed, input_size, data_mode), out,
                     _recipe(recipe, epochs, batch_size, lr, weight_decay), sparsity=sparsity, arch_kwargs=kwargs,
                     start_from=start_from, like=like, run=_run(device, seed, no_resume, compile_, precision))
    click.echo(f"{out}: test accuracy {meta['accuracy']:.2%}, {meta['params']:,} params, {meta['macs']:,} MACs")
