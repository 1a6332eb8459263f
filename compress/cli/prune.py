"""`compress prune`."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import (_data, _percent, as_usage, budget_options, only_with, only_without,
                                  resolved_round_to, shared_option)
from compress.cli.params import DEVICE, FINITE, OUT_DIR, ROUND_TO, FiniteFloat, GivenPath


@click.command("prune")
@click.argument("model_dir", type=GivenPath(path_type=Path))
@click.option("--out", type=OUT_DIR, required=True)
@click.option("--percent", type=FINITE, default=None, help="Fraction of BN channels to prune, in (0, 1).")
@click.option("--plan", "plan_path", type=GivenPath(dir_okay=False, path_type=Path), default=None,
              help="Replay the kept channels of an earlier plan.json instead of thresholding.")
@budget_options()
@click.option("--cost-aware", is_flag=True,
              help="With a target: rank channels by |γ| divided by their share of the target's cost "
                   "(MACs for --target-latency).")
@click.option("--min-keep", type=FiniteFloat(0, 1), default=0.2, show_default=True,
              help="Floor: every layer keeps at least this fraction of its channels.")
@click.option("--round-to", type=ROUND_TO, default="1", show_default=True,
              help="Round kept channels up to a multiple: 8 suits tensor cores; auto is ONNX Runtime's CPU "
                   "convolution block here (16 with AVX-512, 8 with AVX2), which its fast kernels need.")
@click.option("--no-compensate", is_flag=True, help="Do not fold removed channels' β into the next layer.")
@shared_option("select")
@click.option("--data", "data_spec", default=None,
              help="Measure accuracy right after pruning, and re-estimate BN statistics, on this data.")
@click.option("--recalibrate", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Training images (augmented as in training) to re-estimate BN running statistics on after an "
                   "inexact pruning (0: off; needs --data).")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Use N test images (stratified).")
@click.option("--device", type=DEVICE, default=None,
              help="Where --data's accuracy and BN statistics are computed: cpu, cuda, cuda:1 (needs --data).")
def prune_cmd(model_dir, out, percent, plan_path, target_macs, target_params, target_latency, backend, cost_aware,
              min_keep, round_to, no_compensate, shared, data_spec, recalibrate, test_limit, device):
    """Remove the channels whose BN |γ| falls under one global threshold."""
    from compress.request import PruneRequest
    from compress.stages.prune import float64_note, prune, unrounded_note
    from compress.stages.summary import budget_text

    if percent is not None:
        _percent(percent)
    # pruning itself runs on the CPU: without --data these would be silently ignored
    only_with("--data", data_spec, "device", "recalibrate", "test_limit")
    only_without("--plan (a plan replays the channels it recorded)", plan_path, "min_keep", "round_to")
    data = _data(data_spec, None, test_limit, 0) if data_spec else None
    with as_usage():
        request = PruneRequest(percent=percent, target_macs=target_macs, target_params=target_params,
                               target_latency_ms=target_latency, backend=backend,
                               importance="cost" if cost_aware else "gamma", min_keep=min_keep,
                               round_to=resolved_round_to(round_to), compensate=not no_compensate, shared=shared)
        meta = prune(model_dir, out, request, plan_path=plan_path, data=data, recalibrate=recalibrate, device=device)
    p = meta["pruning"]
    acc = ""
    if meta["accuracy"] is not None:
        acc = f", accuracy right after pruning {meta['accuracy']:.2%}"
        if p["bn_recalibration_images"]:
            acc += (f" (BN statistics re-estimated on {p['bn_recalibration_images']} training images; "
                    f"{p['accuracy_uncalibrated']:.2%} before)")
    if p.get("budget"):
        acc += "; " + budget_text(p["budget"])
    click.echo(f"{out}: channels {p['channels_before']} → {p['channels_after']}, "
               f"params {p['params_before']:,} → {meta['params']:,} ({meta['params'] / p['params_before'] - 1:+.1%}), "
               f"FLOPs (2×MACs) {2 * p['macs_before']:,} → {meta['flops']:,} "
               f"({meta['macs'] / p['macs_before'] - 1:+.1%}){acc}")
    note = float64_note(p)
    if note:
        click.echo(note, err=True)
    if plan_path is None and request.round_to == 1:
        from compress.artifact import read_meta

        note = unrounded_note(meta, read_meta(model_dir).get("widths") or {})
        if note:
            click.echo(note, err=True)
