"""`compress info`."""

from __future__ import annotations

import json

import click

from compress.cli.params import FiniteFloat, GivenPath


@click.command("info")
@click.argument("model_or_arch", type=GivenPath(what="a model directory, an .onnx file or an architecture name",
                                                  path_type=str))
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="For an architecture name (default 10).")
@click.option("--width", type=FiniteFloat(min=0, min_open=True), default=None, help="For an architecture name.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def info(model_or_arch, num_classes, width, as_json):
    """Parameters, MACs, FLOPs (= 2 × MACs) and per-layer widths of a model dir, .onnx file or arch name."""
    from compress.info import describe

    result = describe(model_or_arch, num_classes=num_classes, width=width)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['name']}: {result['params']:,} params, {result['macs']:,} MACs, "
               f"{result['flops']:,} FLOPs (FLOPs = 2 × MACs; Conv and Linear only)")
    if result.get("accuracy") is not None:
        click.echo(f"accuracy: {result['accuracy']:.2%}")
    for name, w in (result.get("widths") or {}).items():
        if w["type"] == "Conv2d":
            click.echo(f"  {name}: {w['in_channels']} → {w['out_channels']}" + (f" (groups {w['groups']})" if w["groups"] > 1 else ""))
        elif w["type"] == "Linear":
            click.echo(f"  {name}: {w['in_features']} → {w['out_features']}")
