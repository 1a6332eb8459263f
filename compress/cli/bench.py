"""`compress bench`: latency, memory, energy, FLOPs and accuracy of deployed artifacts, in one report.

The measuring happens in `runtime/` (torch-free, so the same code runs on a Jetson); this module
parses options, loads the evaluation data, exports model directories to ONNX for the ONNX Runtime
backends, and prints or writes the report.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

import click

from compress.errors import CompressError

BACKEND_CHOICES = ("ort-cpu", "ort-cuda", "ort-trt", "trt", "torch", "torch-compile")
DEFAULT_ITERS = 100


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,8,32, got {text!r}",
                                 param_hint="--batch") from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"batch sizes must be positive, got {text!r}", param_hint="--batch")
    return tuple(dict.fromkeys(values))


def _model_dir_map(items: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for item in items:
        artifact, sep, directory = item.partition("=")
        if not sep or not artifact or not directory:
            raise click.BadParameter(f"expected ARTIFACT=MODEL_DIR, got {item!r}", param_hint="--model-dir")
        out[str(Path(artifact))] = Path(directory)
    return out


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="ort-cpu", show_default=True,
              help="ort-*: ONNX Runtime with the CPU/CUDA/TensorRT provider (.onnx); trt: TensorRT engine; "
                   "torch / torch-compile: PyTorch reference on a model directory.")
@click.option("--batch", "batch_text", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed iterations before each batch size.")
@click.option("--iters", type=click.IntRange(min=2), default=None,
              help=f"Timed iterations per batch size (default {DEFAULT_ITERS}).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Instead of --iters: time each batch size for this many seconds.")
@click.option("--data", "data_spec", default=None,
              help="Also measure each artifact's accuracy on this dataset's test split (cifar10, a folder, a .tar.gz).")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Use N test images (stratified).")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write report.json, report.md and PNG plots into this directory.")
@click.option("--model-dir", "model_dir_items", multiple=True, metavar="ARTIFACT=DIR",
              help="Model directory whose model.json describes ARTIFACT (per-layer widths); by default a "
                   "model.json beside the artifact is used.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads.")
@click.option("--cuda-graph", is_flag=True, help="TensorRT: replay the execution as a CUDA graph.")
@click.option("--power", type=click.Choice(["auto", "tegrastats", "nvml", "none"]), default="auto",
              show_default=True, help="Power source: tegrastats on Jetson, NVML on desktop GPUs.")
@click.option("--power-interval", type=click.IntRange(min=10), default=100, show_default=True,
              help="Power sampling interval in ms.")
@click.option("--device", type=click.IntRange(min=0), default=0, show_default=True, help="CUDA device index.")
@click.option("--no-plots", is_flag=True, help="With --report: skip the PNG plots.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json's content on stdout and nothing else.")
def bench(artifacts, backend, batch_text, warmup, iters, duration, data_spec, test_limit, report_dir,
          model_dir_items, threads, cuda_graph, power, power_interval, device, no_plots, as_json):
    """Benchmark one or more artifacts (.onnx, .engine or model directories) on this machine.

    \b
    Several artifacts give one report with ratios against the first:
      compress bench runs/vgg/sparse/model.onnx runs/vgg/finetuned/model.onnx --data cifar10 --report out/
      compress bench vgg-fp16.engine vgg-int8.engine --backend trt --batch 1,8,32 --duration 10
      compress bench runs/vgg/finetuned --backend torch --batch 1 --iters 200
    """
    from runtime.bench import BenchSettings, EvalData, run_benchmark
    from runtime.errors import RuntimeBenchError
    from runtime.report import render_summary, to_json, write_report
    from runtime.runners import check_backend

    if iters is not None and duration is not None:
        raise click.UsageError("give --iters or --duration, not both")
    if no_plots and report_dir is None:
        raise click.UsageError("--no-plots only applies with --report DIR")
    batches = _batches(batch_text)
    model_dirs = _model_dir_map(model_dir_items)
    log = (lambda msg: click.echo(msg, err=True))
    try:
        check_backend(backend)
        settings = BenchSettings(backend=backend, batches=batches, warmup=warmup,
                                 iters=None if duration is not None else (iters or DEFAULT_ITERS), duration_s=duration,
                                 power=power, power_interval_ms=power_interval, cuda_graph=cuda_graph, threads=threads,
                                 device=device)
    except (RuntimeBenchError, ValueError) as exc:
        raise CompressError(str(exc)) from None

    data = None
    if data_spec:
        from compress.data import load_dataset

        loaded = load_dataset(data_spec, "test", limit=test_limit)
        data = EvalData(loaded.images.numpy(), loaded.labels.numpy(), list(loaded.classes), data_spec)
        log(f"accuracy on {len(data.labels)} test images of {data_spec}")

    command = "compress " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    with tempfile.TemporaryDirectory(prefix="compress-bench-") as tmp:
        paths, names, exported, export_errors = _runnable_paths(artifacts, backend, Path(tmp), model_dirs, log)
        report = run_benchmark(paths, settings, data=data, model_dirs=model_dirs, names=names, command=command, log=log)
    for i, v in enumerate(report["variants"]):
        if i in exported:
            v["artifact"] = str(exported[i])
            v["note"] = "model directory exported to a temporary ONNX file (opset 17, dynamic batch) for ONNX Runtime"
        if i in export_errors:
            v["status"], v["error"] = "failed", export_errors[i]
    if report_dir is not None:
        written = write_report(report, report_dir, plots=not no_plots)
        log(f"wrote {', '.join(str(p) for p in written.values())}")
    if as_json:
        click.echo(to_json(report), nl=False)
    else:
        click.echo(render_summary(report))
    if all(v["status"] == "failed" for v in report["variants"]):
        sys.exit(1)


def _runnable_paths(artifacts, backend: str, tmp: Path, model_dirs: dict, log):
    """Paths the backend runs and display names; model directories become temporary ONNX files for ort-*.

    Also returns {index: model directory} for the exported ones and {index: error} for failed exports.
    """
    paths, names = [], []
    exported: dict[int, Path] = {}
    errors: dict[int, str] = {}
    taken: set[str] = set()
    for artifact in artifacts:
        name = artifact.name or str(artifact)
        if name in taken:
            name = str(artifact)
        taken.add(name)
        names.append(name)
        if backend.startswith("ort-") and artifact.is_dir() and (artifact / "model.json").is_file():
            try:
                onnx_path = _export_to_onnx(artifact, tmp / f"{len(paths)}-{artifact.name}.onnx", log)
            except Exception as exc:  # noqa: BLE001 - the variant becomes a failed row, not a crash
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                errors[len(paths)] = f"export to ONNX failed: {first}"
                log(f"{artifact}: {errors[len(paths)]}")
                paths.append(artifact)
                continue
            model_dirs.setdefault(str(onnx_path), artifact)
            exported[len(paths)] = artifact
            paths.append(onnx_path)
        else:
            paths.append(artifact)
    return paths, names, exported, errors


def _export_to_onnx(model_dir: Path, out: Path, log) -> Path:
    from compress import __version__
    from compress.artifact import WEIGHTS, file_sha256, load_model_dir
    from export.onnx_export import export_onnx

    model, meta = load_model_dir(model_dir)
    norm = meta["normalization"]
    metadata = {"classes": meta["classes"], "mean": norm["mean"], "std": norm["std"],
                "input_size": meta["input_size"], "arch": meta["arch"], "precision": "fp32",
                "source_sha256": file_sha256(Path(model_dir) / WEIGHTS), "toolkit_version": __version__}
    export_onnx(model, out, input_size=meta["input_size"], metadata=metadata)
    log(f"{model_dir}: exported to a temporary ONNX file for ONNX Runtime")
    return out
