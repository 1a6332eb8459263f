"""`compress export`: model directory → parity-checked ONNX (FP32 / FP16) → TensorRT engine.

The export package knows nothing of model directories or datasets; this module loads them and
passes modules, metadata and input arrays in.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress.cli.params import FRACTION, NON_NEGATIVE
from compress.errors import CompressError

RANDOM_INPUTS = 64


@click.command("export")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--onnx", "onnx_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write an ONNX file here (FP16 with --fp16; the FP32 one then goes beside it as *.fp32.onnx).")
@click.option("--trt", "trt_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Build a TensorRT engine here, with its X.engine.json sidecar.")
@click.option("--check-trt", is_flag=True,
              help="Only check SOURCE (.onnx) for TensorRT readiness; exit 1 when it has errors.")
@click.option("--opset", type=click.IntRange(13, 17), default=17, show_default=True)
@click.option("--batch", default=None,
              help="ONNX: example batch, or the fixed batch with --static-batch (default 1). "
                   "TensorRT: MIN:OPT:MAX batch profile (default 1:8:32).")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True,
              help="Batch dimension named 'batch', or fixed to --batch.")
@click.option("--fp16", is_flag=True, help="FP16 ONNX with float32 inputs/outputs (and an FP16 engine with --trt).")
@click.option("--int8", "int8_onnx", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Build the engine from this INT8 Q/DQ ONNX file (from `compress quantize`).")
@click.option("--workspace", type=click.IntRange(min=1), default=None, help="TensorRT workspace limit in MB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
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
              help="FP32 parity: largest allowed |logit difference|.")
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

    say = (lambda _msg: None) if as_json else click.echo
    try:
        if check_trt:
            _check_trt(source, as_json)
            return
        report = _run(source, onnx_out, trt_out, opset, batch, dynamic_batch, fp16, int8_onnx, workspace,
                      timing_cache, opt_level, dla_core, data_spec, parity_limit, atol, min_agreement, verbose, say)
    except ExportError as exc:
        raise CompressError(str(exc)) from None
    except ValueError as exc:
        raise CompressError(str(exc).strip().splitlines()[0]) from None
    if as_json:
        click.echo(json.dumps(report, indent=2))


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


def _run(source, onnx_out, trt_out, opset, batch, dynamic_batch, fp16, int8_onnx, workspace, timing_cache,
         opt_level, dla_core, data_spec, parity_limit, atol, min_agreement, verbose, say) -> dict:
    from compress.atomic import signals_as_exceptions, staged
    from compress.guard import check_outputs
    from compress.lock import output_lock
    from compress.exporting.engine_sidecar import sidecar_path
    from compress.exporting.tensorrt_build import import_tensorrt, parse_profile

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
    for option, path in (("--onnx", onnx_out), ("--trt", trt_out)):
        if path is not None and path.is_dir():
            raise CompressError(f"{option} {path} is a directory; give a file name")

    # Every output, checked against every input before any work: nothing may overwrite an input.
    fp32_path = fp16_path = None
    if int8_onnx is None:
        fp32_path, fp16_path = _onnx_paths(source, onnx_out, trt_out, fp16)
    onnx_outputs = []  # (label, final path), written in this run
    if source is not None and source.suffix != ".onnx":
        onnx_outputs.append(("--onnx" if onnx_out == fp32_path else "the FP32 ONNX", fp32_path))
    if fp16_path is not None:
        onnx_outputs.append(("--onnx" if onnx_out == fp16_path else "the FP16 ONNX", fp16_path))
    outputs = list(onnx_outputs)
    if trt_out is not None:
        outputs += [("--trt", trt_out), ("the engine sidecar", sidecar_path(trt_out))]
    if timing_cache is not None:
        outputs.append(("--timing-cache", timing_cache))
    inputs = [("SOURCE", source), ("--int8", int8_onnx)]
    if data_spec and Path(data_spec).exists():
        inputs.append(("--data", Path(data_spec)))
    check_outputs(inputs=inputs, outputs=outputs)

    from compress.exporting.onnx_file import load_onnx

    # Cheap checks next: a corrupt input file, then a missing TensorRT, before minutes of export work.
    for given in (source, int8_onnx):
        if given is not None and given.suffix == ".onnx":
            load_onnx(given)
    profile = None
    if trt_out is not None:
        import_tensorrt()
        if batch is not None:
            try:
                profile = parse_profile(batch)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--batch") from None
    onnx_batch = _onnx_batch(batch, profile, dynamic_batch)
    report: dict = {}
    primary = onnx_out or trt_out
    with signals_as_exceptions(), output_lock(primary, "compress export", directory=False):
        engine_onnx = int8_onnx
        if int8_onnx is None:
            engine_onnx = fp32_path
            if fp16 and source.suffix == ".onnx" and onnx_out is None and _precision(source) == "fp16":
                fp16 = False  # already FP16: build from it as it is
                engine_onnx = source
                onnx_outputs = [o for o in onnx_outputs if o[1] != fp16_path]
            finals = [path for _, path in onnx_outputs]
            lines: list[str] = []
            # Written under temporary names; renamed only once every parity check has passed.
            with staged(finals) as tmps:
                tmp_of = dict(zip(finals, tmps))
                inputs_x = labels = None
                fp32_file = fp32_path
                if source.suffix != ".onnx":
                    fp32_file = tmp_of[fp32_path]
                    inputs_x, labels, result = _export_model_dir(source, fp32_file, fp32_path, opset,
                                                                 dynamic_batch, onnx_batch, data_spec, parity_limit,
                                                                 atol, min_agreement, lines.append)
                    report["onnx"] = result
                if fp16:
                    report["fp16"] = _make_fp16(fp32_file, tmp_of[fp16_path], fp16_path, inputs_x, labels, data_spec,
                                                parity_limit, lines.append)
                    engine_onnx = fp16_path
            for line in lines:
                say(line)

        if trt_out is not None:
            from compress.exporting.tensorrt_build import build_engine

            wanted = "int8" if int8_onnx is not None else ("fp16" if fp16 else None)
            info = build_engine(engine_onnx, trt_out, profile=profile, workspace_mb=workspace,
                                timing_cache=timing_cache, opt_level=opt_level, dla_core=dla_core, precision=wanted,
                                verbose=verbose, log=say)
            say(f"wrote {trt_out} ({info['precision']}, {info['engine_size'] / 2**20:.1f} MiB, built in "
                f"{info['build_time_s']:.1f} s on {info['gpu_name']}) and {trt_out.name}.json")
            report["engine"] = {"path": str(trt_out), **info}
    return report


def _precision(path: Path) -> str:
    from compress.exporting.fp16 import precision_of
    from compress.exporting.onnx_file import load_onnx

    return precision_of(load_onnx(path, check=False))


def _onnx_batch(batch, profile, dynamic_batch) -> int:
    """Example (or fixed) batch of the ONNX export."""
    if profile is not None:
        if not dynamic_batch and profile.min != profile.max:
            raise click.BadParameter("--static-batch needs a single batch size, e.g. --batch 8",
                                     param_hint="--batch")
        return profile.opt
    if batch is None:
        return 1
    try:
        value = int(batch)
    except ValueError:
        raise click.BadParameter(f"ONNX export takes one batch size, got {batch!r} "
                                 "(MIN:OPT:MAX is for --trt)", param_hint="--batch") from None
    if value < 1:
        raise click.BadParameter("must be >= 1", param_hint="--batch")
    return value


def _onnx_paths(source: Path, onnx_out, trt_out, fp16) -> tuple[Path, Path | None]:
    """Where the FP32 and FP16 ONNX files go: the requested name holds the requested precision."""
    if source.suffix == ".onnx":
        fp32 = source
        base = onnx_out or trt_out.with_suffix(".fp16.onnx")
        return fp32, (base if fp16 else None)
    if onnx_out is not None:
        if fp16:
            return onnx_out.with_name(onnx_out.stem + ".fp32.onnx"), onnx_out
        return onnx_out, None
    fp32 = trt_out.with_suffix(".onnx")
    return fp32, (trt_out.with_suffix(".fp16.onnx") if fp16 else None)


def _export_model_dir(model_dir: Path, tmp: Path, out: Path, opset, dynamic_batch, batch, data_spec, parity_limit,
                      atol, min_agreement, say):
    """Export to `tmp` (which becomes `out` once every check has passed) and check parity on it."""
    from compress import __version__
    from compress.artifact import WEIGHTS, file_sha256
    from compress.info import load_checked
    from compress.exporting.onnx_export import export_onnx
    from compress.exporting.parity import ACCURACY_TOL, check_parity

    model, meta = load_checked(Path(model_dir))
    norm = meta["normalization"]
    metadata = {
        "classes": meta["classes"], "mean": norm["mean"], "std": norm["std"], "input_size": meta["input_size"],
        "arch": meta["arch"], "precision": "fp32", "source_sha256": file_sha256(Path(model_dir) / WEIGHTS),
        "toolkit_version": __version__,
    }
    _check_output_width(model, meta, model_dir)
    try:
        export_onnx(model, tmp, input_size=meta["input_size"], metadata=metadata, opset=opset,
                    dynamic_batch=dynamic_batch, batch=batch)
    except ValueError as exc:  # metadata from model.json that can't be right
        raise CompressError(f"{Path(model_dir) / 'model.json'}: {exc}") from None
    say(f"wrote {out} (fp32, opset {opset}, {'dynamic batch' if dynamic_batch else f'batch {batch}'}, "
        f"{tmp.stat().st_size / 2**20:.1f} MiB)")
    inputs, labels, what = _parity_inputs(data_spec, parity_limit, norm["mean"], norm["std"], meta["input_size"],
                                          meta["classes"])
    result = _named(out, tmp, lambda: check_parity(
        model, tmp, inputs, atol, min_agreement, labels=labels,
        accuracy_tol=ACCURACY_TOL if labels is not None else None))
    say(f"parity ONNX Runtime vs torch on {what}: {result.summary()}")
    return inputs, labels, {"path": str(out), "opset": opset, "dynamic_batch": dynamic_batch,
                            "parity_inputs": what, "parity": result.to_dict()}


def _check_output_width(model, meta: dict, model_dir: Path) -> None:
    """One output per class, or the exported file would label its logits wrongly."""
    import torch

    from compress.validate import check_output_width

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else "cpu"
    with torch.no_grad():
        out = model(torch.zeros(1, *meta["input_size"], device=device))
    check_output_width(int(out.shape[-1]), meta["classes"], str(Path(model_dir) / "model.json"))


def _named(final: Path, tmp: Path, check):
    """Run a check on a temporary file; its errors name the file the user asked for."""
    from compress.exporting.errors import ExportError

    try:
        return check()
    except ExportError as exc:
        raise type(exc)(str(exc).replace(str(tmp), str(final))) from None


def _make_fp16(fp32_path: Path, tmp: Path, fp16_path: Path, inputs, labels, data_spec, parity_limit, say) -> dict:
    from compress.exporting.fp16 import convert_fp16
    from compress.exporting.metadata import checked_metadata
    from compress.exporting.parity import FP16_MIN_AGREEMENT, FP16_REL_TOL, check_parity

    _named(fp16_path, tmp, lambda: convert_fp16(fp32_path, tmp))
    say(f"wrote {fp16_path} (fp16 weights and compute, float32 input/output, "
        f"{tmp.stat().st_size / 2**20:.1f} MiB)")
    what = "the same inputs"
    if inputs is None:
        meta = checked_metadata(fp32_path)
        inputs, labels, what = _parity_inputs(data_spec, parity_limit, meta["mean"], meta["std"],
                                              meta["input_size"], meta.get("classes"))
    result = _named(fp16_path, tmp, lambda: check_parity(fp32_path, tmp, inputs, min_agreement=FP16_MIN_AGREEMENT,
                                                         rel_tol=FP16_REL_TOL, labels=labels))
    say(f"parity FP16 vs FP32 ONNX on {what}: {result.summary()}")
    return {"path": str(fp16_path), "parity": result.to_dict()}


def _parity_inputs(data_spec, limit, mean, std, input_size, classes):
    """Normalized float32 inputs (and labels with data): real test images, or seeded random uint8 images."""
    import numpy as np
    import torch

    from compress.data import load_dataset_for, normalize

    if data_spec:
        data = load_dataset_for(data_spec, "test", input_size, limit=limit)
        if classes is not None and len(data.classes) != len(classes):
            raise CompressError(f"{data_spec} has {len(data.classes)} classes, the model {len(classes)}")
        if list(data.input_size) != list(input_size):
            raise CompressError(f"{data_spec} images are {list(data.input_size)}, the model takes {list(input_size)}")
        x = normalize(data.eval_images(), mean, std).numpy()
        return x, data.labels.numpy(), f"{len(data)} test images of {data_spec}"
    n = limit or RANDOM_INPUTS
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *input_size), dtype=torch.uint8, generator=gen)
    return normalize(images, mean, std).numpy().astype(np.float32), None, f"{n} random images"
