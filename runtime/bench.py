"""The benchmark harness: every artifact through one backend, per batch size, into one report.

A variant that fails to load, or a batch size it cannot run, becomes a row with its error; the
other variants and batch sizes are still measured.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from compress.runtime.artifact_info import attach_model_json, file_info, find_model_json, model_counts
from compress.runtime.backends import get_backend, parse_backends
from compress.runtime.bench_input import benchmark_input
from compress.runtime.bench_settings import BenchSettings
from compress.runtime.errors import one_line
from compress.runtime.input_files import check_regular_file
from compress.runtime.runners import artifact_kind, check_artifact_fits, open_runner
from compress.runtime.stats import noise_warning, summarize, throughput

__all__ = ["BenchSettings", "EvalData", "bench_variant", "file_info", "find_model_json", "measured_anything",
           "one_line", "parse_backends", "run_benchmark"]

# Fewer power samples than this in a window give no trustworthy average.
MIN_POWER_SAMPLES = 2


@dataclass
class EvalData:
    """Labelled uint8 images (N×C×H×W) for measuring an artifact's accuracy."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)
    spec: str = ""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolve_power(settings: BenchSettings, backends: list[str] | tuple[str, ...] = ()) -> str:
    """The power source to sample: `auto` picks what this machine has; a source asked for by name that it
    cannot read is refused here (ValueError), before anything runs, rather than reported as a warning under
    a report without the energy the user asked for."""
    if settings.power == "none":
        return "none"
    if settings.power != "auto":
        _check_power_source(settings.power, settings.device, backends or (settings.backend,))
        return settings.power
    from compress.runtime.jetson import is_jetson
    from compress.runtime.optional import has_module

    if is_jetson():
        import shutil

        return "tegrastats" if shutil.which("tegrastats") else "none"
    if get_backend(settings.backend).gpu and has_module("pynvml"):
        from compress.runtime.nvml import power_available

        return "nvml" if power_available(settings.device) else "none"
    return "none"


def _check_power_source(kind: str, device: int, backends) -> None:
    import shutil

    from compress.runtime.optional import has_module

    if kind == "tegrastats" and not shutil.which("tegrastats"):
        raise ValueError("--power tegrastats: no tegrastats on this machine's PATH (it ships with Jetson Linux)")
    if kind == "nvml":
        if not any(get_backend(b).gpu for b in backends):
            raise ValueError("--power nvml reads a GPU's power, and every --backend here runs on the CPU")
        if not has_module("pynvml"):
            raise ValueError("--power nvml needs nvidia-ml-py (pip install nvidia-ml-py)")
        from compress.runtime.nvml import power_available

        if not power_available(device):
            raise ValueError(f"--power nvml: GPU {device} gives no power reading through NVML")


def run_benchmark(artifacts: list[str | Path], settings: BenchSettings, *, data: EvalData | None = None,
                  model_dirs: dict[str, str | Path] | None = None, names: list[str] | None = None,
                  command: str | None = None, log: Callable[[str], None] = _stderr,
                  backends: list[str] | tuple[str, ...] | None = None) -> dict:
    """Benchmark every artifact on every backend and return the report (schema compress.report/1).

    `backends` (default: settings.backend alone) runs each artifact on several runtimes in one
    report; variants are then named "ARTIFACT [BACKEND]" and the report marks the fastest runtime
    per artifact and batch size. An unknown, empty or repeated backend name is refused (ValueError).
    """
    from compress.runtime.paired_pass import paired_pass
    from compress.runtime.report import build_report
    from compress.runtime.sysinfo import collect_system

    if not artifacts:
        raise ValueError("no artifacts to benchmark")
    backends = parse_backends(backends, default=settings.backend)
    model_dirs = {str(k): v for k, v in (model_dirs or {}).items()}
    gpu_backends = [b for b in backends if get_backend(b).gpu]
    system = collect_system(gpu=bool(gpu_backends), device_index=settings.device)
    power_kind = resolve_power(replace(settings, backend=gpu_backends[0] if gpu_backends else backends[0]),
                               backends)
    base_names: list[str] = []
    taken: set[str] = set()
    for i, artifact in enumerate(artifacts):
        name = names[i] if names and i < len(names) else unique_name(Path(artifact), taken)
        taken.add(name)
        base_names.append(name)
    variants = []
    total = len(artifacts) * len(backends)
    for i, (artifact, name) in enumerate(zip(artifacts, base_names)):
        for j, backend in enumerate(backends):
            shown = name if len(backends) == 1 else f"{name} [{backend}]"
            log(f"[{i * len(backends) + j + 1}/{total}] {name}: {backend}")
            # NVML reads the GPU board: beside a CPU runtime its figure would be the idle card's, not the run's.
            board_only = power_kind == "nvml" and not get_backend(backend).gpu
            v = bench_variant(artifact, replace(settings, backend=backend), name=shown, data=data,
                              model_dir=model_dirs.get(str(artifact)), power_kind="none" if board_only else power_kind,
                              log=log)
            if board_only:
                v["warnings"].append(f"{shown}: no energy figure: NVML measures the GPU board, and {backend} runs "
                                     "on the CPU")
            v["artifact_name"] = name
            variants.append(v)
    paired, paired_warnings = [], []
    if settings.paired_blocks and len(artifacts) >= 2:
        for backend in backends:
            paired += paired_pass(variants, backend, settings, paired_warnings, log)
    run_settings = {**asdict(settings), "backend": backends[0], "backends": backends,
                    "batches": list(settings.batches), "power_source": power_kind,
                    "data": data.spec if data is not None else None,
                    "accuracy_images": int(len(data.labels)) if data is not None else None}
    report = build_report(variants, run_settings, system, command)
    report["paired"] = paired
    report["warnings"] += paired_warnings
    return report


def measured_anything(report: dict) -> bool:
    """Whether at least one variant has at least one measured batch size."""
    return any(row.get("status") == "ok" for v in report.get("variants", []) for row in v.get("latency") or [])


def unique_name(path: Path, taken: set[str]) -> str:
    """The artifact's file name, or its path, or either with ' (2)', ' (3)'... : never one already taken."""
    name = path.name or str(path)
    if name in taken:
        name = str(path)
    base, k = name, 2
    while name in taken:
        name, k = f"{base} ({k})", k + 1
    return name


def bench_variant(artifact: str | Path, settings: BenchSettings, *, name: str | None = None,
                  data: EvalData | None = None, model_dir: str | Path | None = None, power_kind: str = "none",
                  log: Callable[[str], None] = _stderr) -> dict:
    """One report row: file, counts, widths, outputs, then per-batch latency, memory, power and accuracy."""
    from compress.runtime.errors import RuntimeBenchError
    from compress.runtime.hostmem import HostMemory

    path = Path(artifact)
    kind = artifact_kind(path)
    v: dict = {"name": name or path.name, "artifact": str(path), "kind": kind, "backend": settings.backend,
               "status": "ok", "error": None, "warnings": [], "file": None, "model": None, "precision": None,
               "ran_at": None, "runner": None, "outputs": None, "latency": [], "memory": None, "power": None,
               "accuracy": None, "reference_accuracy": None, "widths": None, "model_json": None, "input_shape": None}
    if not path.exists():
        return _failed(v, f"artifact not found: {path}")
    try:
        if not path.is_dir():
            check_regular_file(path, "artifact")  # a FIFO or a device would block or never end
        check_artifact_fits(path, settings.backend)  # before any file it names is read for counts
    except RuntimeBenchError as exc:
        return _failed(v, one_line(exc))
    v["file"] = file_info(path, kind)
    v["model"] = model_counts(path, kind, v["warnings"], one_line)
    attach_model_json(v, path, kind, model_dir, one_line)

    memory = HostMemory()
    memory.mark("before_load")
    try:
        runner = open_runner(path, settings.backend, threads=settings.threads, device=settings.device,
                             cuda_graph=settings.cuda_graph, performance_hint=settings.performance_hint,
                             streams=settings.streams)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes this variant's error row
        log(f"  failed to load: {one_line(exc)}")
        return _failed(v, one_line(exc))
    with runner:
        memory.mark("after_load")
        v["runner"] = runner.info()
        v["input_shape"] = list(runner.input_shape) if runner.input_shape is not None else None
        declared = (runner.metadata or {}).get("input_size")
        if isinstance(declared, list) and v["input_shape"] is not None and declared != v["input_shape"]:
            v["warnings"].append(f"{v['name']}: its compress.input_size {declared} disagrees with the graph's input "
                                 f"{v['input_shape']}; the graph's is measured")
        v["precision"] = runner.metadata.get("precision")
        v["ran_at"] = runner.ran_at
        _note_quantization(v, runner.metadata, settings.backend)
        _check_outputs(runner, settings.batches[0], v, log)
        sampler = _start_sampler(power_kind, settings, v["warnings"])
        try:
            for batch in settings.batches:
                v["latency"].append(_bench_batch(runner, batch, settings, v, sampler, log))
        finally:
            if sampler is not None:
                sampler.stop()
        if sampler is not None:
            _finish_power(v, sampler)
        if data is not None:
            v["accuracy"] = _accuracy(runner, data, settings, v, log)
        memory.mark("after_run")
        v["memory"] = {"host": memory.summary(), "gpu": _safe(runner.gpu_memory, v["warnings"], "GPU memory")}
    v["status"] = _status(v, data)
    return v


def _status(v: dict, data: EvalData | None) -> str:
    """failed: no batch size was measured; partial: a batch size failed, the outputs are not finite, or an
    accuracy asked of a classifier is missing."""
    if not any(row["status"] == "ok" for row in v["latency"]):
        return "failed"  # its rows say why; `error` stays for a variant that did not load
    if any(row["status"] != "ok" for row in v["latency"]) or v.get("nonfinite_outputs"):
        return "partial"
    if data is not None and v["accuracy"] is None and not v.get("accuracy_skipped"):
        return "partial"
    return "ok"


def _check_outputs(runner, batch: int, v: dict, log) -> None:
    """One inference on the benchmark input: records each output's name and shape, and whether any holds a
    NaN or an infinity (a broken model: its timings stand, its accuracy is not reported)."""
    from compress.runtime.accuracy import nonfinite_outputs

    try:
        outs = runner.infer_all(benchmark_input(runner, batch))
    except Exception as exc:  # noqa: BLE001 - the batch rows report the same failure
        v["warnings"].append(f"{v['name']}: outputs not checked: {one_line(exc)}")
        return
    names = [runner.output_name(k) for k in range(len(outs))]
    v["outputs"] = [{"name": n, "shape": list(o.shape[1:]), "dtype": str(o.dtype)} for n, o in zip(names, outs)]
    bad = nonfinite_outputs(outs, names)
    if bad:
        _nonfinite(v, f"{v['name']}: output {', '.join(bad)} holds NaN or infinite values on the benchmark input; "
                      "the model is broken, so no accuracy is reported", bad, log)


def _nonfinite(v: dict, message: str, outputs: list[str], log) -> None:
    v["nonfinite_outputs"] = outputs
    v["warnings"].append(message)
    log(f"  {message}")


def _note_quantization(v: dict, meta: dict, backend: str) -> None:
    """Record an INT8 file's target and instruction set, and warn when it runs elsewhere than it was made for."""
    target = meta.get("quant_target")
    if target is None:
        return
    v["quantization"] = {"target": target, "instruction_set": meta.get("quant_isa"),
                         "recipe": meta.get("quant_recipe"), "accuracy_session": meta.get("quant_eval_session")}
    if target == "cpu" and get_backend(backend).gpu:
        v["warnings"].append(f"{v['name']}: quantized with the cpu recipe; TensorRT-style files come from "
                             "`compress quantize --target trt`")
    elif target == "trt" and backend == "ort-cpu":
        v["warnings"].append(f"{v['name']}: quantized with the trt recipe; on ONNX Runtime's CPU kernels "
                             "`compress quantize --target cpu` is the recipe that keeps accuracy")
    elif target == "cpu" and meta.get("quant_isa"):
        from compress.runtime.cpu_features import int8_isa, saturates

        here = int8_isa()
        if saturates(meta["quant_isa"], here):
            v["warnings"].append(f"{v['name']}: quantized with 8-bit weights for {meta['quant_isa']}; this CPU has "
                                 "no VNNI, where int8 kernels saturate on them, so its outputs and accuracy here "
                                 "are not the file's; re-quantize with --cpu-isa avx2 (or auto) for this machine")
        elif here != meta["quant_isa"]:
            v["warnings"].append(f"{v['name']}: quantized for instruction set {meta['quant_isa']}, this CPU is "
                                 f"{here}; re-quantize with --cpu-isa {here} (or auto) for this machine")


def _failed(v: dict, error: str) -> dict:
    v["status"], v["error"] = "failed", error
    return v


def _safe(fn, warnings: list, what: str):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a missing figure must not sink the run
        warnings.append(f"{what} unavailable: {one_line(exc)}")
        return None


def _bench_batch(runner, batch: int, settings: BenchSettings, v: dict, sampler, log) -> dict:
    row: dict = {"batch": batch, "status": "ok", "error": None}
    try:
        x = benchmark_input(runner, batch)
        problem = runner.output_batch_problem(runner.infer_all(x), batch)  # a file of ours is refused there
        warmup = max(settings.warmup, 1) if runner.device != "cpu" else settings.warmup
        timings = runner.measure(x, warmup=warmup, iters=settings.iters, duration_s=settings.duration_s)
        t_end = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - this batch size fails, the others still run
        log(f"  batch {batch}: failed: {one_line(exc)}")
        row.update(status="failed", error=one_line(exc))
        return row
    e2e = summarize(timings.end_to_end_ms)
    compute = summarize(timings.compute_ms) if timings.compute_ms is not None else None
    row.update(iterations=timings.iterations, elapsed_s=timings.elapsed_s, end_to_end=e2e, compute=compute,
               throughput_img_s=throughput(batch, e2e),
               compute_throughput_img_s=throughput(batch, compute) if compute else None, warnings=[])
    for label, stats in (("end-to-end", e2e), ("compute", compute)):
        if stats is not None:
            w = noise_warning(stats, f"{v['name']} batch {batch} {label}")
            if w:
                row["warnings"].append(w)
                v["warnings"].append(w)
                log(f"  warning: {w}")
    batch_note = [f"{problem}: if the model answers one image for the whole batch, this throughput is not per "
                  "image"] if problem else []
    for w in batch_note + runner.caveats(batch):
        row["warnings"].append(w)
        v["warnings"].append(w)
        log(f"  warning: {w}")
    if sampler is not None:
        row["power_window"] = (t_end - timings.elapsed_s, t_end,
                               timings.iterations * batch * getattr(runner, "inferences_per_step", 1), timings.elapsed_s)
    log(f"  batch {batch}: p50 {e2e['p50_ms']:.3f} ms (min {e2e['min_ms']:.3f}, max {e2e['max_ms']:.3f}, "
        f"cv {e2e['cv']:.1%}), {row['throughput_img_s']:.1f} img/s over {timings.iterations} iterations")
    return row


def _start_sampler(kind: str, settings: BenchSettings, warnings: list):
    if kind == "none":
        return None
    from compress.runtime.power import make_sampler

    try:
        sampler = make_sampler(kind, settings.power_interval_ms, settings.device).start()
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"power sampling ({kind}) unavailable: {one_line(exc)}")
        return None
    if sampler.error:
        warnings.append(f"power sampling ({kind}) unavailable: {sampler.error}")
        return None
    return sampler


def _finish_power(v: dict, sampler) -> None:
    from compress.runtime.power import energy_per_image_mj

    if sampler.error:
        v["warnings"].append(f"power sampling ({sampler.source}): {sampler.error}")
    per_batch = {}
    for row in v["latency"]:
        window = row.pop("power_window", None)
        if window is None:
            continue
        t0, t1, images, elapsed = window
        w = sampler.window(t0, t1)
        if w["samples"] < MIN_POWER_SAMPLES:
            why = f" ({w.pop('why')})" if w.get("why") else ""
            v["warnings"].append(f"{v['name']} batch {row['batch']}: {w['samples']} power sample(s) in "
                                 f"{elapsed:.2f} s{why}; raise --duration for an energy figure")
            w["avg_power_w"] = None
        w["energy_per_image_mj"] = energy_per_image_mj(w["avg_power_w"], elapsed, images)
        row["power"] = w
        per_batch[str(row["batch"])] = w
    v["power"] = {"source": sampler.source, "rails": sampler.rails, "per_batch": per_batch,
                  "note": "average of the board/GPU power over each timed loop; energy per image = average power x "
                          "loop time / images inferred in the loop (idle power included; a runner that times "
                          "end to end and compute only infers each batch twice per step, and both count)"}


def _accuracy(runner, data: EvalData, settings: BenchSettings, v: dict, log) -> dict | None:
    """Top-1 accuracy of a classifier with finite outputs; anything else says why it has none."""
    from compress.runtime.accuracy import classifier_problem, logit_count, runner_accuracy
    from compress.runtime.errors import NonFiniteOutputError, NotAClassifierError

    if v.get("nonfinite_outputs"):
        return None
    classes = (runner.metadata or {}).get("classes")
    if classes and data.classes and len(classes) != len(data.classes):
        v["warnings"].append(f"accuracy skipped: {data.spec} has {len(data.classes)} classes, "
                             f"{v['name']} {len(classes)}")
        return None
    if classes and data.classes and list(classes) != list(data.classes):
        # Labels are indices into the data's class list: under other names (or another order) they would
        # be scored against the wrong logits, and the top-1 would look plausible.
        i = next(i for i, (a, b) in enumerate(zip(classes, data.classes)) if a != b)
        v["warnings"].append(f"accuracy skipped: class {i} is {data.classes[i]!r} in {data.spec} but "
                             f"{classes[i]!r} in {v['name']}; labels would not line up")
        return None
    count = len(classes) if classes else (len(data.classes) or None)
    shapes = [(1, *o["shape"]) for o in v["outputs"]]
    problem = classifier_problem(shapes, count) if v["outputs"] else None
    logits = logit_count(shapes) if problem else None
    if count is not None and logits is not None:
        # A classifier of other classes than the data's: an accuracy was asked and cannot be had, as when its
        # class names disagree (above), whether or not it names them.
        v["warnings"].append(f"accuracy skipped: {'the model names' if classes else data.spec + ' has'} "
                             f"{count} classes, {v['name']} outputs {logits} logits")
        return None
    try:
        if problem:
            raise NotAClassifierError(f"no accuracy for {v['name']}: {problem}")
        result = runner_accuracy(runner, data.images, data.labels, batch_size=settings.accuracy_batch,
                                 num_classes=count)
    except NotAClassifierError as exc:
        v["accuracy_skipped"] = str(exc)
        v["warnings"].append(str(exc))
        log(f"  {exc}")
        return None
    except NonFiniteOutputError as exc:
        _nonfinite(v, str(exc), ["(on the test images)"], log)
        return None
    except Exception as exc:  # noqa: BLE001
        v["warnings"].append(f"accuracy failed: {one_line(exc)}")
        log(f"  accuracy failed: {one_line(exc)}")
        return None
    log(f"  accuracy {result['accuracy']:.2%} on {result['images']} images of {data.spec}")
    return {**result, "data": data.spec}
