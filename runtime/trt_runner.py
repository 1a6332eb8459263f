"""TensorRT engines run with the name-based I/O API, one code path for TensorRT 10.3 (JetPack 6) and 11.x.

Deserialize with `trt.Runtime`, `create_execution_context`, then per batch size
`set_input_shape` + `set_tensor_address` and `execute_async_v3` on a non-default stream made with
cuda-python (not pycuda, which has no JetPack 7 wheels). Latency comes from CUDA events recorded on
that stream: end-to-end spans host→device copy, execution and device→host copy; compute-only
spans the execution alone. `cuda_graph=True` replays the execution as a captured CUDA graph.

An engine only runs on the TensorRT version and GPU that built it, so its sidecar
(`X.engine.json`, written by `compress export --trt`) is checked first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.runtime import engine_sidecar
from compress.runtime.errors import ArtifactError
from compress.runtime.input_files import MAX_ENGINE_BYTES, check_regular_file, read_regular_file
from compress.runtime.onnx_metadata import check_metadata
from compress.runtime.optional import cudart, tensorrt
from compress.runtime.runner_base import Runner

_NUMPY_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
                "INT64": np.int64, "BOOL": np.bool_}


def numpy_dtype(trt, dtype) -> np.dtype:
    for name, np_type in _NUMPY_TYPES.items():
        if getattr(trt.DataType, name, None) == dtype:
            return np.dtype(np_type)
    raise ArtifactError(f"engine I/O tensor type {dtype} has no numpy equivalent (expected float32 I/O)")


def check_available(backend: str) -> None:
    tensorrt()
    cudart()


def from_options(path: Path, backend: str, options: dict) -> "TrtRunner":
    return TrtRunner(path, device=options.get("device", 0), cuda_graph=options.get("cuda_graph", False))


class TrtRunner(Runner):
    backend = "trt"
    timer = "CUDA events on the runner's stream"
    compute_timing = "execute_async_v3 alone (inputs already on the GPU)"

    def __init__(self, path: str | Path, device: int = 0, cuda_graph: bool = False, check_sidecar: bool = True):
        super().__init__(path)
        from compress.runtime import cuda_rt

        self._cu = cuda_rt
        self._buffers: dict[str, tuple] = {}
        self._graph = None
        self._stream = None
        self._events: list = []
        self.engine = self.context = None
        check_regular_file(self.path, "engine", MAX_ENGINE_BYTES)
        trt = tensorrt()
        self._trt = trt
        rt = cuda_rt.cudart()
        cuda_rt.call(rt.cudaSetDevice(int(device)), "cudaSetDevice")
        self.device = f"cuda:{device}"
        self.device_index = int(device)
        self.gpu_name, self.compute_capability = cuda_rt.gpu_identity(int(device))
        self.sidecar = None
        if check_sidecar:
            self.sidecar = engine_sidecar.check_sidecar(self.path, trt.__version__, self.gpu_name,
                                                        self.compute_capability)
            self.metadata = dict(self.sidecar.get("metadata") or {})
            check_metadata(self.metadata, engine_sidecar.sidecar_path(self.path).name)
        self.cuda_graph = bool(cuda_graph)
        if self.cuda_graph:
            self.timer += " (execution replayed as a CUDA graph)"

        free_before, _ = cuda_rt.mem_get_info()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(read_regular_file(self.path, "engine", MAX_ENGINE_BYTES))
        if self.engine is None:
            raise ArtifactError(f"TensorRT {trt.__version__} could not deserialize {self.path} (see its log above)")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ArtifactError(f"TensorRT could not create an execution context for {self.path} (out of memory?)")
        self._stream = cuda_rt.Stream()
        self._events = [cuda_rt.Event() for _ in range(4)]
        self.load_delta_bytes = free_before - cuda_rt.mem_get_info()[0]

        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or not self.outputs:
            raise ArtifactError(f"{self.path} has inputs {self.inputs} and outputs {self.outputs}; "
                                "the benchmark feeds one image tensor")
        self.input_name = self.inputs[0]
        self.output_names = list(self.outputs)
        self.dtypes = {n: numpy_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        if len(shape) != 4 or any(d < 0 for d in shape[1:]):
            raise ArtifactError(f"{self.path} input shape {shape}: expected N x C x H x W with only N dynamic")
        self.input_shape = tuple(int(d) for d in shape[1:])
        if shape[0] >= 0:
            self.fixed_batch = int(shape[0])
        else:
            low, _opt, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(low[0]), int(high[0])

    def _prepare(self, batch: int) -> None:
        cu = self._cu
        if not self.context.set_input_shape(self.input_name, (batch, *self.input_shape)):
            raise ValueError(f"TensorRT refused input shape {(batch, *self.input_shape)} for {self.path.name}")
        for name in self.inputs + self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ArtifactError(f"{self.path.name}: tensor {name} still has a dynamic shape {shape}")
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            held = self._buffers.get(name)
            if held is None or held[0].nbytes < nbytes:
                if held is not None:
                    held[0].free()
                    held[1].free()
                held = (cu.DeviceBuffer(nbytes), cu.PinnedArray((nbytes,), np.uint8))
            self._buffers[name] = (held[0], held[1], shape, nbytes)
            if not self.context.set_tensor_address(name, held[0].ptr):
                raise ArtifactError(f"TensorRT refused the device address of tensor {name}")
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None
        if self.cuda_graph:
            # One plain execution after a shape change lets TensorRT finish its deferred setup,
            # which must not happen inside a capture.
            self._enqueue()
            self._stream.synchronize()
            self._graph = cu.Graph(self._stream, self._enqueue)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(int(self._stream)):
            raise ArtifactError(f"TensorRT execute_async_v3 failed on {self.path.name}")

    def _host_view(self, name: str) -> np.ndarray:
        _dev, host, shape, nbytes = self._buffers[name]
        return host.array[:nbytes].view(self.dtypes[name]).reshape(shape)

    def _load_input(self, x: np.ndarray) -> None:
        np.copyto(self._host_view(self.input_name), x.astype(self.dtypes[self.input_name], copy=False))

    def _run_once(self):
        """One end-to-end iteration; returns (end_to_end_ms, compute_ms)."""
        cu, stream = self._cu, self._stream
        e0, e1, e2, e3 = self._events
        dev, host, _shape, nbytes = self._buffers[self.input_name]
        e0.record(stream)
        cu.copy_htod_async(dev, host, nbytes, stream)
        e1.record(stream)
        if self._graph is not None:
            self._graph.launch(stream)
        else:
            self._enqueue()
        e2.record(stream)
        for name in self.outputs:
            dev, host, _shape, nbytes = self._buffers[name]
            cu.copy_dtoh_async(host, dev, nbytes, stream)
        e3.record(stream)
        e3.synchronize()
        return e3.elapsed_ms(e0), e2.elapsed_ms(e1)

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        self._load_input(x)
        self._run_once()
        # Copies: the pinned buffers are reused by the next run. Float outputs come back as float32.
        views = [self._host_view(n) for n in self.outputs]
        return [v.astype(np.float32) if v.dtype.kind == "f" else v.copy() for v in views]

    def _step(self, x: np.ndarray):
        self._load_input(x)
        return self._run_once

    def gpu_memory(self) -> dict | None:
        engine = self.engine
        device_memory = getattr(engine, "device_memory_size_v2", None)
        if device_memory is None:  # TensorRT before 10.1
            device_memory = getattr(engine, "device_memory_size", None)
        weights = None
        stat = getattr(getattr(self._trt, "EngineStat", None), "TOTAL_WEIGHTS_SIZE", None)
        if stat is not None and hasattr(engine, "get_engine_stat"):
            try:
                weights = int(engine.get_engine_stat(stat))
            except Exception:  # noqa: BLE001 - informational
                weights = None
        from compress.runtime.nvml import process_memory_bytes

        return {
            "engine_device_memory_bytes": None if device_memory is None else int(device_memory),
            "engine_weights_bytes": weights,
            "engine_weights_source": "EngineStat.TOTAL_WEIGHTS_SIZE" if weights is not None else None,
            "engine_file_bytes": self.path.stat().st_size,
            "io_buffers_bytes": sum(b[0].nbytes for b in self._buffers.values()),
            "load_delta_bytes": int(self.load_delta_bytes),
            "load_delta_source": "cudaMemGetInfo free memory before/after deserialize + context",
            "nvml_process_bytes": process_memory_bytes(self.device_index),
        }

    def info(self) -> dict:
        return {**super().info(), "tensorrt_version": self._trt.__version__, "gpu": self.gpu_name,
                "compute_capability": self.compute_capability, "cuda_graph": self.cuda_graph,
                "profile_batch": [self.min_batch, self.max_batch] if self.fixed_batch is None else [self.fixed_batch] * 2,
                "sidecar_checked": self.sidecar is not None, **self._cu.driver_and_runtime_versions()}

    def close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None
        for dev, host, *_ in self._buffers.values():
            dev.free()
            host.free()
        self._buffers = {}
        for e in self._events:
            e.destroy()
        self._events = []
        # The context must go before the engine, the engine before the runtime.
        self.context = None
        self.engine = None
        self._runtime = None
        if self._stream is not None:
            self._stream.destroy()
            self._stream = None

