"""`compress train`."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import (
    _arch_kwargs,
    _data,
    _recipe,
    data_options,
    recipe_options,
)


@click.command("train")
@click.option("--arch", required=True, help="vgg11/13/16/19, preresnet<9n+2>, densenet<3n+4>, torchvision names.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Model directory.")
@click.option("--sparsity", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="λ of the L1 penalty on BN γ (paper: 1e-4 VGG, 1e-5 ResNet/DenseNet).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (recipe default otherwise).")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=None, help="VGG width multiplier.")
@click.option("--bn-init", type=float, default=None, help="Initial BN γ (default 0.5 as in the paper).")
@data_options
@recipe_options()
def train(arch, out, sparsity, epochs, width, bn_init, data_spec, train_limit, test_limit, seed, lr, batch_size,
          weight_decay, recipe, device, compile_, no_resume):
    """Train a network, optionally with the L1 sparsity penalty on BN γ."""
    from compress.pipeline import train_model

    meta = train_model(arch, _data(data_spec, train_limit, test_limit, seed), out,
                       _recipe(recipe, epochs, batch_size, lr, weight_decay), sparsity=sparsity,
                       arch_kwargs=_arch_kwargs(width, bn_init), device=device, seed=seed,
                       resume=not no_resume, compile=compile_)
    click.echo(f"{out}: test accuracy {meta['accuracy']:.2%}, {meta['params']:,} params, {meta['macs']:,} MACs")
