"""`compress bench`: latency, memory, energy, FLOPs and accuracy of deployed artifacts, in one report.

Parses options, calls compress.benchmarking.bench_artifacts (which measures through the torch-free
runtime/), prints or writes the report, and exits 1 when nothing at all was measured.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from compress.cli.options import _given, only_with
from compress.cli.params import FiniteFloat, GivenPath
from compress.errors import CompressError
from compress.runtime.runner_base import MAX_ITERS

BACKEND_CHOICES = ("ort-cpu", "ort-cuda", "ort-trt", "trt", "torch", "torch-compile", "openvino", "openvino-bf16")
DEFAULT_ITERS = 100


def _batches(text: str) -> tuple[int, ...]:
    items = text.replace(" ", "").split(",")
    if "" in items:  # "1,,2" was read as 1,2: a value lost to a typo may be the one that mattered
        raise click.BadParameter(f"empty batch size in {text!r}", param_hint="--batch")
    try:
        values = tuple(int(t) for t in items)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,8,32, got {text!r}",
                                 param_hint="--batch") from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"batch sizes must be positive, got {text!r}", param_hint="--batch")
    return values


def _backends(items: tuple[str, ...]) -> list[str]:
    from compress.runtime.backends import parse_backends

    try:  # empty, repeated and unknown names are refused by the library
        return parse_backends(items)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend") from None


def _model_dir_map(items: tuple[str, ...], artifacts) -> dict[str, Path]:
    named = {str(Path(a)) for a in artifacts}
    out = {}
    for item in items:
        artifact, sep, directory = item.partition("=")
        if not sep or not artifact or not directory:
            raise click.BadParameter(f"expected ARTIFACT=MODEL_DIR, got {item!r}", param_hint="--model-dir")
        key = str(Path(artifact))
        if key in out:
            raise click.BadParameter(f"{artifact} is given twice", param_hint="--model-dir")
        if key not in named:
            raise click.BadParameter(f"{artifact} is not one of the artifacts to benchmark", param_hint="--model-dir")
        if not (Path(directory) / "model.json").is_file():
            raise click.BadParameter(f"{directory} has no model.json", param_hint="--model-dir")
        out[key] = Path(directory)
    return out


OPENVINO = ("openvino", "openvino-bf16")
# BenchSettings' messages start with the field's name; the option that sets it, for the CLI's message
SETTING_OPTIONS = (("threads", "--threads"), ("streams", "--streams"), ("batch size", "--batch"),
                   ("iters", "--iters"), ("warmup", "--warmup"), ("duration", "--duration"),
                   ("power interval", "--power-interval"), ("device", "--device"), ("paired blocks", "--paired"))


def _check_backend_options(backends: list[str], streams, hint, cuda_graph) -> None:
    """Options that configure one runtime are refused when no chosen backend is that runtime: they would be
    silently ignored."""
    openvino = any(b in OPENVINO for b in backends)
    for name, given in (("--streams", streams is not None), ("--performance-hint", hint is not None)):
        if given and not openvino:
            raise click.UsageError(f"{name} configures OpenVINO: add --backend openvino (or openvino-bf16), "
                                   "or drop it")
    if cuda_graph and "trt" not in backends:
        raise click.UsageError("--cuda-graph configures the TensorRT runner: add --backend trt, or drop it")


@click.command("bench")
@click.argument("artifacts", nargs=-1, required=True, type=GivenPath(path_type=Path))
@click.option("--backend", "backend_items", multiple=True, metavar="NAME[,NAME...]",
              help="ort-cpu (default), ort-cuda, ort-trt: ONNX Runtime with that provider (.onnx); openvino, "
                   "openvino-bf16: OpenVINO on the CPU at f32 / bf16 (.onnx); trt: TensorRT engine; torch, "
                   "torch-compile: PyTorch reference on a model directory. Several (repeat or comma-separate) "
                   "put each artifact on each runtime side by side.")
@click.option("--performance-hint", type=click.Choice(["LATENCY", "THROUGHPUT"]), default=None,
              help="OpenVINO's PERFORMANCE_HINT (default LATENCY).")
@click.option("--streams", type=click.IntRange(min=1), default=None,
              help="OpenVINO's NUM_STREAMS (default: what the hint picks).")
@click.option("--batch", "batch_text", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed iterations before each batch size.")
@click.option("--iters", type=click.IntRange(min=2), default=None,
              help=f"Timed iterations per batch size (default {DEFAULT_ITERS}).")
@click.option("--duration", type=FiniteFloat(min=0, min_open=True), default=None,
              help=f"Instead of --iters: time each batch size for this many seconds (at most {MAX_ITERS:,} "
                   "iterations).")
@click.option("--data", "data_spec", default=None,
              help="Also measure each artifact's accuracy on this dataset's test split (cifar10, a folder, a .tar.gz).")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Use N test images (stratified).")
@click.option("--report", "report_dir", type=GivenPath(file_okay=False, path_type=Path), default=None,
              help="Write report.json, report.md and PNG plots into this directory.")
@click.option("--model-dir", "model_dir_items", multiple=True, metavar="ARTIFACT=DIR",
              help="Model directory whose model.json describes ARTIFACT (per-layer widths, accuracy); by default "
                   "a model.json beside the artifact is used when the artifact records its weights' sha256.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime intra-op threads; OpenVINO INFERENCE_NUM_THREADS.")
@click.option("--cuda-graph", is_flag=True, help="TensorRT: replay the execution as a CUDA graph.")
@click.option("--power", type=click.Choice(["auto", "tegrastats", "nvml", "none"]), default="auto",
              show_default=True, help="Power source: tegrastats on Jetson, NVML on desktop GPUs.")
@click.option("--power-interval", type=click.IntRange(min=10), default=100, show_default=True,
              help="Power sampling interval in ms.")
@click.option("--device", type=click.IntRange(min=0), default=0, show_default=True, help="CUDA device index.")
@click.option("--paired", "paired_blocks", type=click.IntRange(min=6, max=10_000), default=None, metavar="BLOCKS",
              help="Also time the artifacts again all loaded at once and in turns, BLOCKS short blocks per backend "
                   "and batch size (6 to 10000, e.g. 60), and give each one's time over the first's with a 95% "
                   "interval, which cancels the machine's drifting speed where it slows every artifact alike. A "
                   "block runs each artifact at least 20 times, whatever --iters or --duration say.")
@click.option("--no-plots", is_flag=True, help="With --report: skip the PNG plots.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json's content on stdout and nothing else.")
def bench(artifacts, backend_items, performance_hint, streams, batch_text, warmup, iters, duration, data_spec,
          test_limit, report_dir, model_dir_items, threads, cuda_graph, power, power_interval, device, paired_blocks,
          no_plots, as_json):
    """Benchmark one or more artifacts (.onnx, .engine or model directories) on this machine.

    \b
    Several artifacts give one report with ratios against the first:
      compress bench runs/vgg/sparse/model.onnx runs/vgg/finetuned/model.onnx --data cifar10 --report out/
      compress bench vgg-fp16.engine vgg-int8.engine --backend trt --batch 1,8,32 --duration 10
      compress bench runs/vgg/finetuned --backend torch --batch 1 --iters 200
      compress bench vgg.onnx vgg-int8-cpu.onnx --backend ort-cpu,openvino,openvino-bf16 --batch 1,32
      compress bench baseline.onnx pruned.onnx --batch 1,32 --paired 60
    """
    from compress.benchmarking import bench_artifacts
    from compress.runtime.bench import BenchSettings, measured_anything
    from compress.runtime.report import check_report_dir, render_summary, to_json, write_report

    if iters is not None and duration is not None:
        raise click.UsageError("give --iters or --duration, not both")
    if report_dir is not None:
        from compress.guard import check_outputs

        check_outputs(inputs=[("ARTIFACT", Path(a)) for a in artifacts], out_dirs=[("--report", report_dir)],
                      dir_files=("report.json", "report.md"))
        check_report_dir(report_dir)
    if paired_blocks is not None and len(artifacts) < 2:
        raise click.UsageError("--paired compares artifacts with the first one: give at least two")
    if no_plots and report_dir is None:
        raise click.UsageError("--no-plots only applies with --report DIR")
    batches = _batches(batch_text)
    backends = _backends(backend_items)
    model_dirs = _model_dir_map(model_dir_items, artifacts)
    log = (lambda msg: click.echo(msg, err=True))
    try:
        settings = BenchSettings(backend=backends[0], batches=batches, warmup=warmup,
                                 iters=None if duration is not None else (iters or DEFAULT_ITERS), duration_s=duration,
                                 power=power, power_interval_ms=power_interval, cuda_graph=cuda_graph, threads=threads,
                                 device=device, performance_hint=performance_hint or "LATENCY", streams=streams,
                                 paired_blocks=paired_blocks or 0)
    except ValueError as exc:  # BenchSettings bounds every count before a session starts; name the option
        option = next((o for field, o in SETTING_OPTIONS if str(exc).startswith(field)), None)
        if option is None:
            raise CompressError(str(exc)) from None
        raise click.BadParameter(str(exc), param_hint=option) from None
    _check_backend_options(backends, streams, performance_hint, cuda_graph)
    _check_power_interval(settings, backends)
    only_with("--data", data_spec, "test_limit")
    if all(b in ("ort-cpu", *OPENVINO) for b in backends):
        only_with("a GPU backend (--backend ort-cuda, ort-trt, trt or torch)", False, "device")
    command = "compress " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else None
    report = bench_artifacts(list(artifacts), settings, backends=backends, data_spec=data_spec, test_limit=test_limit,
                             model_dirs=model_dirs, command=command, log=log)
    try:
        if report_dir is not None:
            written = write_report(report, report_dir, plots=not no_plots)
            log(f"wrote {', '.join(str(p) for p in written.values())}")
    finally:  # a report that could not be written is still printed: the measurement is not lost
        click.echo(to_json(report) if as_json else render_summary(report), nl=not as_json)
    if not measured_anything(report):
        click.echo("Error: nothing was measured: every artifact or batch size failed (see the rows above)", err=True)
        sys.exit(1)


def _check_power_interval(settings, backends) -> None:
    """--power-interval given where no power source will be sampled (--power none, or auto on CPU backends
    and machines without NVML or tegrastats) would do nothing."""
    from compress.runtime.bench import resolve_power

    if not _given(["power_interval"]):
        return
    try:
        source = resolve_power(settings, backends)
    except ValueError:
        return  # a named source this machine lacks: the benchmark refuses it in its own words
    if source == "none":
        raise click.UsageError("--power-interval does nothing without a power source: this run samples none "
                               "(--power none, or CPU backends, or no NVML or tegrastats here); drop --power-interval")
