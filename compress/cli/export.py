"""`compress export`: model directory → parity-checked ONNX (FP32 / FP16) → TensorRT engine.

Parses the options, calls compress.export (compress.stages.export), prints what it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress.cli.options import only_without
from compress.cli.params import FRACTION, NON_NEGATIVE, GivenPath
from compress.errors import CompressError
from compress.limits import MAX_BATCH
from compress.stages.export import RANDOM_INPUTS


@click.command("export")
@click.argument("source", required=False, type=GivenPath(path_type=Path))
@click.option("--onnx", "onnx_out", type=GivenPath(dir_okay=False, path_type=Path), default=None,
              help="Write an ONNX file here (FP16 with --fp16; the FP32 one then goes beside it as *.fp32.onnx).")
@click.option("--trt", "trt_out", type=GivenPath(dir_okay=False, path_type=Path), default=None,
              help="Build a TensorRT engine here, with its X.engine.json sidecar.")
@click.option("--check-trt", is_flag=True,
              help="Only check SOURCE (.onnx) for TensorRT readiness; exit 1 when it has errors.")
@click.option("--opset", type=click.IntRange(13, 17), default=17, show_default=True, help="ONNX opset of the graph.")
@click.option("--batch", default=None,
              help="ONNX: example batch, or the fixed batch with --static-batch (default 1). "
                   "TensorRT: MIN:OPT:MAX batch profile (default 1:8:32).")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True,
              help="Batch dimension named 'batch', or fixed to --batch.")
@click.option("--fp16", is_flag=True, help="FP16 ONNX with float32 inputs/outputs (and an FP16 engine with --trt).")
@click.option("--int8", "int8_onnx", type=GivenPath(dir_okay=False, path_type=Path), default=None,
              help="Build the engine from this INT8 Q/DQ ONNX file (from `compress quantize`).")
@click.option("--workspace", type=click.IntRange(min=1), default=None, help="TensorRT workspace limit in MB.")
@click.option("--timing-cache", type=GivenPath(dir_okay=False, path_type=Path), default=None,
              help="Load and update a TensorRT timing cache file (faster rebuilds).")
@click.option("--opt-level", type=click.IntRange(0, 5), default=None, help="TensorRT builder optimization level.")
@click.option("--dla-core", type=click.IntRange(min=0), default=None,
              help="Run on this DLA core (Jetson), falling back to the GPU; needs --fp16 or --int8.")
@click.option("--data", "data_spec", default=None,
              help="Check parity on this dataset's test images and print torch and ONNX Runtime accuracies.")
@click.option("--parity-limit", type=click.IntRange(min=1), default=None,
              help=f"Images for the parity check (default: the whole test split with --data, "
                   f"{RANDOM_INPUTS} random images without).")
@click.option("--atol", type=NON_NEGATIVE, default=1e-3, show_default=True,
              help="FP32 parity: largest allowed |difference| per output; an output beyond it passes only if "
                   "a float64 review finds float32 rounding (docs/ARTIFACTS.md).")
@click.option("--min-agreement", type=FRACTION, default=0.999, show_default=True,
              help="FP32 parity: smallest allowed top-1 agreement.")
@click.option("--verbose", is_flag=True, help="TensorRT builder log at INFO level.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def export(source, onnx_out, trt_out, check_trt, opset, batch, dynamic_batch, fp16, int8_onnx, workspace,
           timing_cache, opt_level, dla_core, data_spec, parity_limit, atol, min_agreement, verbose, as_json):
    """Export a model directory to ONNX and/or a TensorRT engine, checking parity on the way.

    \b
      compress export runs/vgg/finetuned --onnx vgg.onnx --data cifar10
      compress export runs/vgg/finetuned --onnx vgg-fp16.onnx --fp16
      compress export vgg.onnx --trt vgg.engine --fp16 --batch 1:8:32
      compress export --trt vgg-int8.engine --int8 vgg-int8.onnx
      compress export --check-trt vgg-int8.onnx
    """
    from compress.exporting.errors import ExportError
    from compress.stages.export import Engine, OnnxShape, Parity, export as run_export

    say = (lambda _msg: None) if as_json else click.echo
    try:
        if check_trt:
            only_without("--check-trt (it reads the .onnx file alone)", check_trt, "onnx_out", "trt_out", "opset",
                         "batch", "dynamic_batch", "fp16", "int8_onnx", "workspace", "timing_cache", "opt_level",
                         "dla_core", "data_spec", "parity_limit", "atol", "min_agreement", "verbose")
            _check_trt(source, as_json)
            return
        _check_usage(source, onnx_out, trt_out, fp16, int8_onnx)
        _check_trt_options(trt_out, {"--workspace": workspace, "--timing-cache": timing_cache,
                                     "--opt-level": opt_level, "--dla-core": dla_core})
        profile, onnx_batch = _batch(batch, trt_out)
        engine = None if trt_out is None else Engine(trt_out, profile=profile, workspace_mb=workspace,
                                                     timing_cache=timing_cache, opt_level=opt_level,
                                                     dla_core=dla_core, verbose=verbose)
        precision = "int8" if int8_onnx is not None else ("fp16" if fp16 else "fp32")
        report = run_export(int8_onnx if int8_onnx is not None else source, onnx_out, precision=precision,
                            check=Parity(data_spec, parity_limit, atol, min_agreement),
                            onnx=OnnxShape(opset=opset, dynamic_batch=dynamic_batch, batch=onnx_batch),
                            engine=engine, log=say)
    except ExportError as exc:
        raise CompressError(str(exc)) from None
    except ValueError as exc:
        raise CompressError(str(exc).strip().splitlines()[0]) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))


def _check_usage(source, onnx_out, trt_out, fp16, int8_onnx) -> None:
    if onnx_out is None and trt_out is None:
        raise click.UsageError("give --onnx OUT.onnx, --trt OUT.engine, or --check-trt")
    if fp16 and int8_onnx is not None:
        raise click.UsageError("--fp16 and --int8 exclude each other")
    if int8_onnx is not None and trt_out is None:
        raise click.UsageError("--int8 QDQ.onnx builds an engine: add --trt OUT.engine")
    if int8_onnx is not None and (source is not None or onnx_out is not None):
        raise click.UsageError("with --int8 the engine comes from the Q/DQ file alone: drop SOURCE and --onnx")
    if int8_onnx is None and source is None:
        raise click.UsageError("missing SOURCE: a model directory or an .onnx file")
    if source is not None and source.suffix == ".onnx" and onnx_out is not None and not fp16:
        raise click.UsageError("SOURCE is already ONNX: --onnx with an .onnx SOURCE needs --fp16")


def _check_trt_options(trt_out, given: dict) -> None:
    """TensorRT's options mean nothing without --trt: refused rather than silently ignored."""
    named = [name for name, value in given.items() if value is not None]
    if trt_out is None and named:
        raise click.UsageError(f"{', '.join(named)} configure{'s' if len(named) == 1 else ''} the TensorRT engine: "
                               "add --trt OUT.engine, or drop it")


def _batch(batch, trt_out):
    """--batch: the engine's MIN:OPT:MAX profile with --trt, else the ONNX export's one batch size."""
    if batch is None:
        return None, None
    if trt_out is not None:
        from compress.exporting.tensorrt_build import parse_profile

        try:
            return parse_profile(batch), None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--batch") from None
    try:
        value = int(batch)
    except ValueError:
        raise click.BadParameter(f"ONNX export takes one batch size, got {batch!r} "
                                 "(MIN:OPT:MAX is for --trt)", param_hint="--batch") from None
    if value < 1:
        raise click.BadParameter("must be >= 1", param_hint="--batch")
    if value > MAX_BATCH:  # torch would be asked for the example batch's memory at once
        raise click.BadParameter(f"{value:,} is over the bound of {MAX_BATCH:,} (MAX_BATCH)", param_hint="--batch")
    return None, value


def _check_trt(source: Path | None, as_json: bool) -> None:
    from compress.exporting.trt_readiness import check_file, errors

    if source is None or source.suffix != ".onnx":
        raise click.UsageError("--check-trt needs an .onnx file: compress export --check-trt MODEL.onnx")
    findings = check_file(source)
    bad = errors(findings)
    if as_json:
        click.echo(json.dumps({"onnx": str(source), "ready": not bad,
                               "findings": [f.__dict__ for f in findings]}, indent=2))
    else:
        for f in findings:
            click.echo(str(f))
        verdict = "not TensorRT-ready" if bad else "TensorRT-ready"
        click.echo(f"{source}: {verdict} ({len(bad)} error(s), {len(findings) - len(bad)} warning(s))")
    if bad:
        raise SystemExit(1)
