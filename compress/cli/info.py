"""`compress info`."""

from __future__ import annotations

import json

import click

from compress.cli.options import arch_options, parse_arch_kwargs
from compress.cli.params import FiniteFloat, GivenPath


@click.command("info")
@click.argument("model_or_arch", type=GivenPath(what="a model directory, an .onnx file or an architecture name",
                                                  path_type=str))
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="For an architecture name (default 10).")
@click.option("--width", type=FiniteFloat(min=0, min_open=True), default=None, help="For an architecture name.")
@click.option("--input-size", type=click.IntRange(min=8, max=4096), default=None,
              help="For an architecture name: count MACs at N×N pixels (default 32).")
@arch_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def info(model_or_arch, num_classes, width, input_size, arch_kwargs_json, as_json):
    """Parameters, MACs, FLOPs (= 2 × MACs) and per-layer widths of a model dir, .onnx file or arch name."""
    from compress.info import describe

    arch_kwargs = parse_arch_kwargs(arch_kwargs_json) if arch_kwargs_json is not None else None
    result = describe(model_or_arch, num_classes=num_classes, width=width, input_size=input_size,
                      arch_kwargs=arch_kwargs)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    size = result.get("input_size")
    at = f" at {'×'.join(str(v) for v in size)}" if size else ""
    click.echo(f"{result['name']}: {result['params']:,} params, {result['macs']:,} MACs{at}, "
               f"{result['flops']:,} FLOPs (FLOPs = 2 × MACs; Conv and Linear only)")
    if result.get("accuracy") is not None:
        click.echo(f"accuracy: {result['accuracy']:.2%}")
    for name, w in (result.get("widths") or {}).items():
        if w["type"] == "Conv2d":
            click.echo(f"  {name}: {w['in_channels']} → {w['out_channels']}" + (f" (groups {w['groups']})" if w["groups"] > 1 else ""))
        elif w["type"] == "Linear":
            click.echo(f"  {name}: {w['in_features']} → {w['out_features']}")
