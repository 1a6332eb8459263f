"""`compress quantize`: INT8 post-training quantization into a Q/DQ ONNX file for TensorRT or the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress.cli.options import only_with
from compress.cli.params import FiniteFloat, GivenPath


@click.command("quantize")
@click.argument("model", type=GivenPath(path_type=Path))
@click.option("--data", "data_spec", default="cifar10", show_default=True,
              help="Dataset: calibration images come from its train split, accuracy from its test split.")
@click.option("--out", type=GivenPath(dir_okay=False, path_type=Path), required=True,
              help="Output OUT.onnx (OUT.quant.json is written beside it).")
@click.option("--target", type=click.Choice(["trt", "cpu"]), default="trt", show_default=True,
              help="trt: TensorRT's symmetric int8 Q/DQ (GPUs, Jetson). cpu: ONNX Runtime's CPU recipe for the "
                   "instruction set (S8S8 with VNNI or on ARM; U8S8 with 7-bit weights on AVX2 without VNNI); its "
                   "accuracy is measured in ONNX Runtime's optimized session.")
@click.option("--cpu-isa", type=click.Choice(["auto", "vnni", "avx2", "arm64"]), default="auto", show_default=True,
              help="--target cpu: the CPU the file will run on (auto: this machine's, from /proc/cpuinfo).")
@click.option("--calib-images", type=click.IntRange(min=1), default=512, show_default=True,
              help="Training images for calibration (stratified, seeded).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True,
              help="Activation range calibration (onnxruntime.quantization's calibrators). entropy is its KL "
                   "search over 2048-bin histograms, which clips ReLU activations hard on CNNs: prefer minmax "
                   "or percentile unless it measures better.")
@click.option("--percentile", type=FiniteFloat(90, 100, min_open=True), default=99.999, show_default=True,
              help="Percentile of |activation| kept by --method percentile.")
@click.option("--exclude", multiple=True,
              help="Keep this layer in float: an ONNX node name or a module path (features.0). Repeatable.")
@click.option("--sensitivity", is_flag=True,
              help="Quantize one layer at a time and print the accuracy drop per layer.")
@click.option("--keep-float", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep the K most sensitive layers in float (implies --sensitivity).")
@click.option("--sensitivity-images", type=click.IntRange(min=1), default=500, show_default=True,
              help="Training images for the sensitivity scan (not test images: the INT8 accuracy is reported on those).")
@click.option("--eval-limit", type=click.IntRange(min=1), default=None,
              help="Measure FP32 and INT8 accuracy on N test images (default: the whole test split).")
@click.option("--ort-int8-kernels", "int8_kernels", is_flag=True,
              help="--target trt: also measure INT8 accuracy with ONNX Runtime's fused CPU int8 kernels (these saturate "
                   "on x86 CPUs without VNNI, so they can read lower than the Q/DQ graph itself).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the calibration images' draw (the sensitivity images use seed + 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def quantize(model, data_spec, out, target, cpu_isa, calib_images, method, percentile, exclude, sensitivity, keep_float,
             sensitivity_images, eval_limit, int8_kernels, seed, as_json):
    """INT8 Q/DQ ONNX from a model directory or an FP32 .onnx file (calibrated post-training).

    \b
      compress quantize runs/x/finetuned --data cifar10 --out runs/x/int8.onnx
      compress quantize model.onnx --data cifar10 --out int8.onnx --sensitivity --keep-float 2
      compress quantize model.onnx --data cifar10 --out int8-cpu.onnx --target cpu
    """
    from compress.quantization import (
        QuantizeOptions,
        quantize_model,
        sensitivity_markdown,
        summary_markdown,
    )

    only_with("--sensitivity or --keep-float", sensitivity or keep_float > 0, "sensitivity_images")
    opts = QuantizeOptions(data=data_spec, calib_images=calib_images, method=method, exclude=tuple(exclude),
                           keep_float=keep_float, sensitivity=sensitivity or keep_float > 0,
                           sensitivity_images=sensitivity_images, eval_limit=eval_limit, seed=seed,
                           percentile=percentile, int8_kernels=int8_kernels, target=target, cpu_isa=cpu_isa)
    log = (lambda _m: None) if as_json else (lambda m: click.echo(m, err=True))
    report = quantize_model(model, out, opts, log=log)
    if as_json:
        from compress.quantization import _jsonable

        click.echo(json.dumps(_jsonable(report), indent=2))
        return
    if report.get("sensitivity"):
        click.echo(sensitivity_markdown(report["sensitivity"]["layers"], report["sensitivity"]["fp32_accuracy"]))
    click.echo(summary_markdown(report), nl=False)
    click.echo(f"Wrote {out} and {out.with_suffix('.quant.json')}")
