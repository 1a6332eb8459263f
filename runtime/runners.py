"""One interface over every backend: load an artifact, prepare a batch size, infer, and time iterations.

Backends (one module each, imported only when chosen):

| name            | artifact                        | module                  |
| --------------- | ------------------------------- | ----------------------- |
| `ort-cpu`       | .onnx                           | compress.runtime.ort_runner      |
| `ort-cuda`      | .onnx                           | compress.runtime.ort_runner      |
| `ort-trt`       | .onnx                           | compress.runtime.ort_runner      |
| `trt`           | .engine (+ .engine.json sidecar)| compress.runtime.trt_runner      |
| `torch`         | model directory                 | compress.runtime.torch_runner    |
| `torch-compile` | model directory                 | compress.runtime.torch_runner    |
| `openvino`      | .onnx (FP32 / INT8 Q/DQ), f32   | compress.runtime.openvino_runner |
| `openvino-bf16` | .onnx, bf16 inference precision | compress.runtime.openvino_runner |

A runner measures two latencies per iteration where the device makes them differ: end-to-end
(host input → device → host output) and compute-only (inputs already on the device). On a CPU
they are the same measurement and `compute_ms` is None.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "trt", "torch", "torch-compile", "openvino", "openvino-bf16")
ONNX_BACKENDS = ("ort-cpu", "ort-cuda", "ort-trt", "openvino", "openvino-bf16")
GPU_BACKENDS = ("ort-cuda", "ort-trt", "trt")
# Fewest timed iterations in --duration mode, so a spread can always be computed.
MIN_ITERS = 2


@dataclass
class Timings:
    """Per-iteration latencies of one batch size, in milliseconds."""

    end_to_end_ms: list[float]
    compute_ms: list[float] | None
    elapsed_s: float
    batch: int
    iterations: int = field(init=False)

    def __post_init__(self):
        self.iterations = len(self.end_to_end_ms)


class Runner:
    """Base class. Subclasses set the attributes below and implement `_prepare`, `_infer` and `_step`."""

    backend = "?"
    device = "cpu"
    timer = "time.perf_counter"
    compute_timing: str | None = None

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata: dict = {}
        self.input_shape: tuple[int, ...] | None = None  # per sample, e.g. (3, 32, 32)
        self.fixed_batch: int | None = None  # a static batch dimension
        self.min_batch = 1
        self.max_batch: int | None = None  # largest batch a dynamic profile allows (None: unbounded)
        self.prepared_batch: int | None = None

    # --- what subclasses implement ---------------------------------------------------------------

    def _prepare(self, batch: int) -> None:
        """Allocate and bind whatever a batch of this size needs."""

    def _infer(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _step(self, x: np.ndarray) -> Callable[[], tuple[float, float | None]]:
        """A callable running one timed iteration on x: returns (end_to_end_ms, compute_ms or None)."""
        raise NotImplementedError

    @property
    def ran_at(self) -> str | None:
        """The precision the backend computed in; by default the artifact's own (its metadata)."""
        return self.metadata.get("precision")

    def info(self) -> dict:
        return {"backend": self.backend, "device": self.device, "timer": self.timer,
                "compute_timing": self.compute_timing}

    def gpu_memory(self) -> dict | None:
        return None

    def close(self) -> None:
        pass

    # --- shared behaviour ------------------------------------------------------------------------

    def check_batch(self, batch: int) -> None:
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        if self.fixed_batch is not None and batch != self.fixed_batch:
            raise ValueError(f"{self.path.name} has a static batch of {self.fixed_batch}; batch {batch} needs "
                             "an artifact exported with a dynamic batch")
        if batch < self.min_batch or (self.max_batch is not None and batch > self.max_batch):
            raise ValueError(f"batch {batch} is outside {self.path.name}'s optimization profile "
                             f"{self.min_batch}..{self.max_batch}; rebuild the engine with a wider --batch profile")

    def prepare(self, batch: int) -> None:
        if batch != self.prepared_batch:
            self.check_batch(batch)
            self._prepare(batch)
            self.prepared_batch = batch

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Logits for any number of normalized float32 images, in chunks the artifact accepts."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        chunk = self.fixed_batch or self.max_batch or len(x)
        outs = []
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk]
            n = len(part)
            smallest = self.fixed_batch or self.min_batch
            if n < smallest:
                # A static batch (or a profile's minimum) is filled with copies of the last image;
                # the padding's logits are dropped.
                part = np.concatenate([part, np.repeat(part[-1:], smallest - n, axis=0)])
            self.prepare(len(part))
            outs.append(np.asarray(self._infer(part))[:n])
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def measure(self, x: np.ndarray, *, warmup: int = 10, iters: int | None = None,
                duration_s: float | None = None) -> Timings:
        """Warm up, then time `iters` iterations (default 100), or as many as fit in `duration_s`, on batch x."""
        if iters is not None and duration_s is not None:
            raise ValueError("give exactly one of iters and duration_s")
        if iters is None and duration_s is None:
            iters = 100
        if iters is not None and iters < MIN_ITERS:
            raise ValueError(f"iters must be at least {MIN_ITERS} to report a spread, got {iters}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        batch = len(x)
        self.prepare(batch)
        step = self._step(x)
        for _ in range(warmup):
            step()
        e2e: list[float] = []
        comp: list[float] = []
        append_e, append_c = e2e.append, comp.append
        clock = time.perf_counter
        t0 = clock()
        if iters is not None:
            for _ in range(iters):
                a, b = step()
                append_e(a)
                append_c(b)
        else:
            deadline = t0 + float(duration_s)
            while len(e2e) < MIN_ITERS or clock() < deadline:
                a, b = step()
                append_e(a)
                append_c(b)
        elapsed = clock() - t0
        compute = None if all(c is None for c in comp) else [float(c) for c in comp]
        return Timings(e2e, compute, elapsed, batch)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_runner(artifact: str | Path, backend: str = "ort-cpu", **options) -> Runner:
    """The runner for `backend` on `artifact`; options go to the backend (threads, device, cuda_graph, ...)."""
    artifact = Path(artifact)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    check_artifact_fits(artifact, backend)
    if backend.startswith("ort-"):
        from compress.runtime.ort_runner import OrtRunner

        return OrtRunner(artifact, backend=backend, threads=options.get("threads"),
                         device_id=options.get("device", 0))
    if backend.startswith("openvino"):
        from compress.runtime.openvino_runner import OpenVinoRunner

        return OpenVinoRunner(artifact, backend=backend, threads=options.get("threads"),
                              performance_hint=options.get("performance_hint") or "LATENCY",
                              streams=options.get("streams"))
    if backend == "trt":
        from compress.runtime.trt_runner import TrtRunner

        return TrtRunner(artifact, device=options.get("device", 0), cuda_graph=options.get("cuda_graph", False))
    from compress.runtime.torch_runner import TorchRunner

    return TorchRunner(artifact, compile=backend == "torch-compile", device=options.get("torch_device"))


def check_artifact_fits(artifact: Path, backend: str) -> None:
    """Refuse an artifact the backend cannot run, with the command that makes the right one."""
    from compress.runtime.errors import ArtifactError

    kind = {"model_dir": "model directory", "unknown": "file of unknown kind"}.get(artifact_kind(artifact),
                                                                                 f"{artifact_kind(artifact)} file")
    if not artifact.exists():
        raise ArtifactError(f"artifact not found: {artifact}")
    if backend in ONNX_BACKENDS and kind != "onnx file":
        raise ArtifactError(f"{backend} runs .onnx files, {artifact} is a {kind}; "
                            "make one with `compress export MODEL_DIR --onnx OUT.onnx`")
    if backend == "trt" and kind != "engine file":
        raise ArtifactError(f"trt runs TensorRT .engine files, {artifact} is a {kind}; "
                            "build one with `compress export MODEL.onnx --trt OUT.engine`")
    if backend.startswith("torch") and kind not in ("model directory", "onnx file"):
        raise ArtifactError(f"{backend} runs model directories, {artifact} is a {kind}")


def check_backend(backend: str) -> None:
    """Fail early, once, when the backend's packages are missing (instead of once per artifact)."""
    from compress.runtime import optional
    from compress.runtime.errors import BackendUnavailableError, MissingExtraError

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend.startswith("ort-"):
        ort = optional.onnxruntime()
        from compress.runtime.ort_runner import PROVIDERS

        wanted = PROVIDERS[backend][0]
        if wanted not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"{backend} needs ONNX Runtime's {wanted}, but onnxruntime {ort.__version__} here offers only "
                f"{', '.join(ort.get_available_providers())} (install onnxruntime-gpu, or on Jetson the JetPack "
                "onnxruntime wheel)")
    elif backend == "trt":
        optional.tensorrt()
        optional.cudart()
    elif backend.startswith("openvino"):
        optional.openvino()
        if backend == "openvino-bf16":
            from compress.runtime.openvino_runner import _no_bf16_message, bf16_supported

            if not bf16_supported():
                raise BackendUnavailableError(_no_bf16_message())
    elif not optional.has_module("torch"):
        raise MissingExtraError(f"{backend} needs PyTorch: pip install torch (or use an ort-* / trt backend)")


def artifact_kind(path: str | Path) -> str:
    """'onnx', 'engine', 'model_dir' or 'unknown'."""
    path = Path(path)
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix in (".engine", ".plan", ".trt"):
        return "engine"
    if path.is_dir() and (path / "model.json").is_file():
        return "model_dir"
    return "unknown"


def decode_metadata(props: dict[str, str]) -> dict:
    """`compress.*` ONNX metadata properties → short keys, JSON lists parsed (docs/ARTIFACTS.md)."""
    out = {}
    for key, value in props.items():
        short = key[len("compress."):] if key.startswith("compress.") else key
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[short] = value
    return out
