"""ONNX Runtime with the CPU, CUDA or TensorRT execution provider.

onnxruntime-gpu quietly creates a CPU-only session when the CUDA or TensorRT libraries fail to
load; a benchmark that believed it ran on the GPU would then be wrong by an order of magnitude.
So the providers the session actually got (`session.get_providers()`) are checked after creation
and a fallback is refused.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from compress.runtime.errors import ArtifactError, BackendUnavailableError, readable
from compress.runtime.external_data import check_onnx_file
from compress.runtime.onnx_metadata import decode_metadata
from compress.runtime.optional import onnxruntime
from compress.runtime.runner_base import Runner

PROVIDERS = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _unavailable(backend: str, ort, available) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"{backend} needs ONNX Runtime's {PROVIDERS[backend][0]}, but onnxruntime {ort.__version__} here offers only "
        f"{', '.join(available)} (install onnxruntime-gpu, or on Jetson the JetPack onnxruntime wheel)")


def check_available(backend: str) -> None:
    ort = onnxruntime()
    if PROVIDERS[backend][0] not in ort.get_available_providers():
        raise _unavailable(backend, ort, ort.get_available_providers())


def from_options(path: Path, backend: str, options: dict) -> "OrtRunner":
    return OrtRunner(path, backend=backend, threads=options.get("threads"), device_id=options.get("device", 0))


class OrtRunner(Runner):
    timer = "time.perf_counter"

    def __init__(self, path: str | Path, backend: str = "ort-cpu", threads: int | None = None, device_id: int = 0):
        super().__init__(path)
        if backend not in PROVIDERS:
            raise ValueError(f"OrtRunner backend must be one of {', '.join(PROVIDERS)}, got {backend!r}")
        self.backend = backend
        self.device = "cpu" if backend == "ort-cpu" else f"cuda:{device_id}"
        self.device_id = int(device_id)
        ort = onnxruntime()
        self._ort = ort
        check_onnx_file(self.path)
        wanted = PROVIDERS[backend][0]
        available = ort.get_available_providers()
        if wanted not in available:
            raise _unavailable(backend, ort, available)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.threads = threads
        self.graph_optimization_level = str(options.graph_optimization_level).rsplit(".", 1)[-1]
        providers = [self._provider_entry(name) for name in PROVIDERS[backend]]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/InvalidGraph/... types
            raise ArtifactError(f"ONNX Runtime cannot load {self.path}: {readable(exc)}") from None
        self.providers = self.session.get_providers()
        if not self.providers or self.providers[0] != wanted:
            raise BackendUnavailableError(
                f"ONNX Runtime fell back from {wanted} to {', '.join(self.providers)} for {self.path.name} "
                "(CUDA/cuDNN/TensorRT libraries missing or mismatched?); refusing to report CPU numbers as "
                f"{backend}")
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path} has {len(inputs)} inputs; the benchmark feeds one image tensor")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise ArtifactError(f"{self.path} input {self.input_name} has shape {shape}; expected N x C x H x W")
        if isinstance(shape[0], int) and shape[0] > 0:
            self.fixed_batch = shape[0]
        self.metadata = decode_metadata(dict(self.session.get_modelmeta().custom_metadata_map), self.path.name)
        if all(isinstance(d, int) and d > 0 for d in shape[1:]):
            self.input_shape = tuple(int(d) for d in shape[1:])
        elif isinstance(self.metadata.get("input_size"), list):
            self.input_shape = tuple(int(d) for d in self.metadata["input_size"])
        if backend != "ort-cpu":
            self.timer = "time.perf_counter (ONNX Runtime synchronizes the device at the end of each run)"
            self.compute_timing = "inputs and outputs bound on the GPU with I/O binding (no host copies)"
            self.inferences_per_step = 2  # `_step` runs end to end, then bound (compute only)
        self._binding = None

    def _provider_entry(self, name: str):
        return name if name == "CPUExecutionProvider" else (name, {"device_id": self.device_id})

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: x})

    def _step(self, x: np.ndarray):
        run, names, feed, clock = self.session.run, self.output_names, {self.input_name: x}, time.perf_counter
        if self.backend == "ort-cpu":
            def step():
                t0 = clock()
                run(names, feed)
                return (clock() - t0) * 1000.0, None
            return step

        ort = self._ort
        binding = self.session.io_binding()
        # The device copy of x is made once here, so the bound run times compute only.
        x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", self.device_id)
        binding.bind_ortvalue_input(self.input_name, x_dev)
        for name in names:
            binding.bind_output(name, "cuda", self.device_id)
        self._binding = (binding, x_dev)
        run_bound = self.session.run_with_iobinding

        def step():
            t0 = clock()
            run(names, feed)
            t1 = clock()
            run_bound(binding)
            return (t1 - t0) * 1000.0, (clock() - t1) * 1000.0
        return step

    def info(self) -> dict:
        return {**super().info(), "providers": self.providers, "onnxruntime_version": self._ort.__version__,
                "intra_op_threads": self.threads or "onnxruntime default",
                "graph_optimization_level": self.graph_optimization_level}

    def gpu_memory(self) -> dict | None:
        if self.backend == "ort-cpu":
            return None
        from compress.runtime.nvml import process_memory_bytes

        return {"nvml_process_bytes": process_memory_bytes(self.device_id)}

    def close(self) -> None:
        self._binding = None
        self.session = None
