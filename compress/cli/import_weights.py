"""`compress import`: a model directory from trained weights."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import _data, only_with, parse_arch_kwargs
from compress.cli.params import DEVICE, OUT_DIR, GivenPath


def _floats(text: str | None, hint: str) -> list[float] | None:
    if text is None:
        return None
    import math

    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected three comma-separated numbers, got {text!r}", param_hint=hint) from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"expected three finite numbers, got {text!r}", param_hint=hint)
    return values


@click.command("import")
@click.argument("weights", type=GivenPath(path_type=Path))
@click.option("--arch", required=True, help="Registry name (resnet18, vgg19, ...) or package.module:Class.")
@click.option("--out", type=OUT_DIR, required=True, help="Model directory.")
@click.option("--arch-kwargs", "arch_kwargs_json", default=None, metavar="JSON",
              help="Constructor arguments as a JSON object.")
@click.option("--input-size", type=click.IntRange(min=8, max=4096), default=None,
              help="Input images are N×N (default: the size of --data's images).")
@click.option("--data", "data_spec", default=None,
              help="Dataset whose class folders name the classes, whose training split gives the normalization, "
                   "and whose test split measures the accuracy.")
@click.option("--classes", default=None, help="Class names, comma-separated, in output order (instead of --data).")
@click.option("--mean", default=None, help="Per-channel mean of [0, 1] pixels, e.g. 0.485,0.456,0.406.")
@click.option("--std", default=None, help="Per-channel std of [0, 1] pixels, e.g. 0.229,0.224,0.225.")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Use N test images (stratified).")
@click.option("--device", type=DEVICE, default=None,
              help="Where --data's accuracy is measured: cpu, cuda, cuda:1 (default: cuda when available).")
def import_cmd(weights, arch, out, arch_kwargs_json, input_size, data_spec, classes, mean, std, test_limit, device):
    """Make a model directory from a state dict (.safetensors, or .pt/.pth/.pth.tar read weights-only).

    \b
      compress import resnet18.pth --arch resnet18 --input-size 224 --classes cat,dog \\
          --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --out models/r18
      compress import mynet.pt --arch mymodule:MyNet --arch-kwargs '{"width": 32}' --data imgs/ --out models/mine
    """
    from compress.stages.import_weights import import_weights

    class_list = [c.strip() for c in classes.split(",")] if classes else None
    if class_list is not None and (not all(class_list) or len(set(class_list)) != len(class_list)):
        raise click.BadParameter("class names must be non-empty and distinct", param_hint="--classes")
    only_with("--data", data_spec, "test_limit", "device")
    data = _data(data_spec, None, test_limit, 0, input_size) if data_spec else None
    meta = import_weights(weights, arch, out, arch_kwargs=parse_arch_kwargs(arch_kwargs_json), input_size=input_size,
                          classes=class_list, data=data, mean=_floats(mean, "--mean"), std=_floats(std, "--std"),
                          device=device)
    acc = "" if meta.get("accuracy") is None else f", test accuracy {meta['accuracy']:.2%}"
    click.echo(f"{out}: {meta['arch']}, {len(meta['classes'])} classes, input {meta['input_size'][-1]} px, "
               f"{meta['params']:,} params, {meta['macs']:,} MACs{acc}")
