"""The benchmark harness: every artifact through one backend, per batch size, into one report.

A variant that fails to load, or a batch size it cannot run, becomes a row with its error; the
other variants and batch sizes are still measured.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from compress.runtime.runners import BACKENDS, GPU_BACKENDS, artifact_kind, open_runner
from compress.runtime.stats import noise_warning, summarize, throughput

INPUT_SEED = 0
# Fewer power samples than this in a window give no trustworthy average.
MIN_POWER_SAMPLES = 2


@dataclass
class BenchSettings:
    backend: str = "ort-cpu"
    batches: tuple[int, ...] = (1, 8, 32)
    warmup: int = 10
    iters: int | None = 100
    duration_s: float | None = None
    power: str = "auto"  # auto, tegrastats, nvml or none
    power_interval_ms: int = 100
    cuda_graph: bool = False
    threads: int | None = None
    device: int = 0
    accuracy_batch: int = 250
    performance_hint: str = "LATENCY"  # OpenVINO: LATENCY or THROUGHPUT
    streams: int | None = None  # OpenVINO: NUM_STREAMS (default: what the hint picks)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.performance_hint not in ("LATENCY", "THROUGHPUT"):
            raise ValueError(f"performance hint must be LATENCY or THROUGHPUT, got {self.performance_hint!r}")
        self.batches = tuple(int(b) for b in self.batches)
        if not self.batches or any(b < 1 for b in self.batches):
            raise ValueError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if (self.iters is None) == (self.duration_s is None):
            raise ValueError("give exactly one of iters and duration_s")
        if self.iters is not None and self.iters < 2:
            raise ValueError(f"iters must be at least 2 to report a spread, got {self.iters}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration must be positive, got {self.duration_s}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.power not in ("auto", "tegrastats", "nvml", "none"):
            raise ValueError(f"power must be auto, tegrastats, nvml or none, got {self.power!r}")


@dataclass
class EvalData:
    """Labelled uint8 images (N×C×H×W) for measuring an artifact's accuracy."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)
    spec: str = ""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_line(exc: BaseException) -> str:
    """The first line of an error; foreign exception types keep their name so the line stays meaningful."""
    from compress.runtime.errors import RuntimeBenchError

    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, (RuntimeBenchError, ValueError, OSError)) and first:
        return first[:500]
    return f"{type(exc).__name__}: {first}"[:500] if first else type(exc).__name__


def resolve_power(settings: BenchSettings) -> str:
    if settings.power != "auto":
        return settings.power
    from compress.runtime.jetson import is_jetson
    from compress.runtime.optional import has_module

    if is_jetson():
        import shutil

        return "tegrastats" if shutil.which("tegrastats") else "none"
    if settings.backend in GPU_BACKENDS and has_module("pynvml"):
        from compress.runtime.nvml import power_available

        return "nvml" if power_available(settings.device) else "none"
    return "none"


def run_benchmark(artifacts: list[str | Path], settings: BenchSettings, *, data: EvalData | None = None,
                  model_dirs: dict[str, str | Path] | None = None, names: list[str] | None = None,
                  command: str | None = None, log: Callable[[str], None] = _stderr,
                  backends: list[str] | tuple[str, ...] | None = None) -> dict:
    """Benchmark every artifact on every backend and return the report (schema compress.report/1).

    `backends` (default: settings.backend alone) runs each artifact on several runtimes in one
    report; variants are then named "ARTIFACT [BACKEND]" and the report marks the fastest runtime
    per artifact and batch size.
    """
    from compress.runtime.report import build_report
    from compress.runtime.sysinfo import collect_system

    if not artifacts:
        raise ValueError("no artifacts to benchmark")
    backends = list(dict.fromkeys(backends or [settings.backend]))
    for b in backends:
        if b not in BACKENDS:
            raise ValueError(f"unknown backend {b!r}; choose one of {', '.join(BACKENDS)}")
    model_dirs = {str(k): v for k, v in (model_dirs or {}).items()}
    gpu_backends = [b for b in backends if b in GPU_BACKENDS]
    system = collect_system(gpu=bool(gpu_backends), device_index=settings.device)
    power_kind = resolve_power(replace(settings, backend=gpu_backends[0] if gpu_backends else backends[0]))
    base_names: list[str] = []
    taken: set[str] = set()
    for i, artifact in enumerate(artifacts):
        name = names[i] if names and i < len(names) else _unique_name(Path(artifact), taken)
        taken.add(name)
        base_names.append(name)
    variants = []
    total = len(artifacts) * len(backends)
    for i, (artifact, name) in enumerate(zip(artifacts, base_names)):
        for j, backend in enumerate(backends):
            shown = name if len(backends) == 1 else f"{name} [{backend}]"
            log(f"[{i * len(backends) + j + 1}/{total}] {name}: {backend}")
            v = bench_variant(artifact, replace(settings, backend=backend), name=shown, data=data,
                              model_dir=model_dirs.get(str(artifact)), power_kind=power_kind, log=log)
            v["artifact_name"] = name
            variants.append(v)
    run_settings = {**asdict(settings), "backend": backends[0], "backends": backends,
                    "batches": list(settings.batches), "power_source": power_kind,
                    "data": data.spec if data is not None else None,
                    "accuracy_images": int(len(data.labels)) if data is not None else None}
    return build_report(variants, run_settings, system, command)


def measured_anything(report: dict) -> bool:
    """Whether at least one variant has at least one measured batch size."""
    return any(row.get("status") == "ok" for v in report.get("variants", []) for row in v.get("latency") or [])


def _unique_name(path: Path, taken: set[str]) -> str:
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
    """One report row: file, counts, widths, then per-batch latency, memory, power and accuracy."""
    from compress.runtime.hostmem import HostMemory

    path = Path(artifact)
    kind = artifact_kind(path)
    v: dict = {"name": name or path.name, "artifact": str(path), "kind": kind, "backend": settings.backend,
               "status": "ok", "error": None, "warnings": [], "file": None, "model": None, "precision": None,
               "ran_at": None,
               "runner": None, "latency": [], "memory": None, "power": None, "accuracy": None,
               "reference_accuracy": None, "widths": None, "model_json": None}
    if not path.exists():
        return _failed(v, f"artifact not found: {path}")
    v["file"] = file_info(path, kind)
    v["model"] = _model_counts(path, kind, v["warnings"])
    _attach_model_json(v, path, kind, model_dir)

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
        v["precision"] = runner.metadata.get("precision")
        v["ran_at"] = runner.ran_at
        _note_quantization(v, runner.metadata, settings.backend)
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
    if any(row["status"] != "ok" for row in v["latency"]) or (data is not None and v["accuracy"] is None):
        v["status"] = "partial"
    return v


def _note_quantization(v: dict, meta: dict, backend: str) -> None:
    """Record an INT8 file's target and instruction set, and warn when it runs elsewhere than it was made for."""
    target = meta.get("quant_target")
    if target is None:
        return
    v["quantization"] = {"target": target, "instruction_set": meta.get("quant_isa"),
                         "recipe": meta.get("quant_recipe"), "accuracy_session": meta.get("quant_eval_session")}
    if target == "cpu" and backend in GPU_BACKENDS:
        v["warnings"].append(f"{v['name']}: quantized with the cpu recipe; TensorRT-style files come from "
                             "`compress quantize --target trt`")
    elif target == "trt" and backend == "ort-cpu":
        v["warnings"].append(f"{v['name']}: quantized with the trt recipe; on ONNX Runtime's CPU kernels "
                             "`compress quantize --target cpu` is the recipe that keeps accuracy")
    elif target == "cpu" and meta.get("quant_isa"):
        from compress.runtime.cpu_features import int8_isa

        here = int8_isa()
        if here != meta["quant_isa"]:
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


def file_info(path: Path, kind: str) -> dict:
    """Size on disk: the file itself, or a model directory's weights (model.safetensors)."""
    if path.is_dir():
        weights = path / "model.safetensors"
        total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return {"size_bytes": weights.stat().st_size if weights.is_file() else total,
                "what": "model.safetensors" if weights.is_file() else "directory total", "directory_bytes": total}
    return {"size_bytes": path.stat().st_size, "what": path.name}


def _model_counts(path: Path, kind: str, warnings: list) -> dict | None:
    from compress.runtime.onnx_flops import count_onnx

    try:
        if kind == "onnx":
            return {**count_onnx(path), "source": "ONNX graph"}
        if kind == "engine":
            side = path.with_name(path.name + ".json")
            onnx_path = None
            if side.is_file():
                onnx_path = json.loads(side.read_text()).get("onnx_path")
            if onnx_path and Path(onnx_path).is_file():
                return {**count_onnx(onnx_path), "source": f"ONNX graph the engine was built from ({onnx_path})"}
            warnings.append(f"{path.name}: parameter/MAC counts unknown (the ONNX file named by its sidecar "
                            "is not here)")
            return None
        if kind == "model_dir":
            meta = json.loads((path / "model.json").read_text())
            return {"params": meta.get("params"), "macs": meta.get("macs"), "flops": meta.get("flops"),
                    "source": "model.json"}
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"{path.name}: cannot count parameters/MACs: {one_line(exc)}")
    return None


def find_model_json(path: Path, kind: str, model_dir: str | Path | None = None) -> Path | None:
    """model.json describing the artifact: given explicitly, the directory itself, or beside the file."""
    candidates = []
    if model_dir is not None:
        candidates.append(Path(model_dir) / "model.json")
    if kind == "model_dir":
        candidates.append(path / "model.json")
    elif kind == "engine":
        side = path.with_name(path.name + ".json")
        try:
            onnx_path = json.loads(side.read_text()).get("onnx_path") if side.is_file() else None
        except (OSError, json.JSONDecodeError):
            onnx_path = None
        if onnx_path:
            candidates.append(Path(onnx_path).parent / "model.json")
        candidates.append(path.parent / "model.json")
    else:
        candidates.append(path.parent / "model.json")
    return next((c for c in candidates if c.is_file()), None)


def _attach_model_json(v: dict, path: Path, kind: str, model_dir) -> None:
    found = find_model_json(path, kind, model_dir)
    if found is None:
        if model_dir is not None:
            v["warnings"].append(f"--model-dir {model_dir} has no model.json")
        return
    try:
        meta = json.loads(found.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        v["warnings"].append(f"{found}: unreadable ({one_line(exc)})")
        return
    v["model_json"] = str(found)
    v["reference_accuracy"] = meta.get("accuracy")
    widths = {}
    for layer, w in (meta.get("widths") or {}).items():
        if w.get("type") == "Conv2d":
            widths[layer] = int(w["out_channels"])
        elif w.get("type") == "Linear":
            widths[layer] = int(w["out_features"])
    v["widths"] = widths or None


def _input(runner, batch: int) -> np.ndarray:
    from compress.runtime.accuracy import normalize

    if runner.input_shape is None:
        raise ValueError(f"{runner.path.name}: input size unknown (no static shape, no compress.input_size)")
    meta = runner.metadata or {}
    channels = runner.input_shape[0]
    mean = meta.get("mean") or [0.5] * channels
    std = meta.get("std") or [0.25] * channels
    images = np.random.default_rng(INPUT_SEED).integers(0, 256, size=(batch, *runner.input_shape), dtype=np.uint8)
    return normalize(images, mean, std)


def _bench_batch(runner, batch: int, settings: BenchSettings, v: dict, sampler, log) -> dict:
    row: dict = {"batch": batch, "status": "ok", "error": None}
    try:
        x = _input(runner, batch)
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
    if sampler is not None:
        row["power_window"] = (t_end - timings.elapsed_s, t_end, timings.iterations * batch, timings.elapsed_s)
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
            v["warnings"].append(f"{v['name']} batch {row['batch']}: {w['samples']} power sample(s) in "
                                 f"{elapsed:.2f} s; raise --duration for an energy figure")
            w["avg_power_w"] = None
        w["energy_per_image_mj"] = energy_per_image_mj(w["avg_power_w"], elapsed, images)
        row["power"] = w
        per_batch[str(row["batch"])] = w
    v["power"] = {"source": sampler.source, "rails": sampler.rails, "per_batch": per_batch,
                  "note": "average of the board/GPU power over each timed loop; energy per image = average power x "
                          "loop time / images (idle power included)"}


def _accuracy(runner, data: EvalData, settings: BenchSettings, v: dict, log) -> dict | None:
    from compress.runtime.accuracy import runner_accuracy

    classes = (runner.metadata or {}).get("classes")
    if classes and data.classes and len(classes) != len(data.classes):
        v["warnings"].append(f"accuracy skipped: {data.spec} has {len(data.classes)} classes, "
                             f"{v['name']} {len(classes)}")
        return None
    try:
        result = runner_accuracy(runner, data.images, data.labels, batch_size=settings.accuracy_batch)
    except Exception as exc:  # noqa: BLE001
        v["warnings"].append(f"accuracy failed: {one_line(exc)}")
        log(f"  accuracy failed: {one_line(exc)}")
        return None
    log(f"  accuracy {result['accuracy']:.2%} on {result['images']} images of {data.spec}")
    return {**result, "data": data.spec}
