"""OpenVINO on the CPU: the same ONNX files as ONNX Runtime, at FP32, BF16 or their INT8 Q/DQ.

OpenVINO reads ONNX directly. On a CPU with BF16 it runs float models at bfloat16 unless told
otherwise, so the inference precision is always set explicitly: `openvino` runs at f32 (an INT8 Q/DQ
file keeps its int8 layers, the rest in f32), `openvino-bf16` asks for bf16 and is refused on a CPU
without it. The model is reshaped to each batch size and compiled for it (static shapes are what
OpenVINO's CPU plugin runs fastest), with the LATENCY performance hint unless another is given.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from compress.runtime.errors import ArtifactError, BackendUnavailableError, readable
from compress.runtime.external_data import check_onnx_file
from compress.runtime.onnx_metadata import decode_metadata
from compress.runtime.optional import openvino
from compress.runtime.runner_base import Runner

PRECISIONS = {"openvino": "f32", "openvino-bf16": "bf16"}
HINTS = ("LATENCY", "THROUGHPUT")


def bf16_supported(core=None) -> bool:
    """Whether OpenVINO's CPU plugin reports BF16 among its capabilities (AVX512_BF16 or AMX)."""
    ov = openvino()
    core = core or ov.Core()
    import openvino.properties as props

    return "BF16" in core.get_property("CPU", props.device.capabilities)


def check_available(backend: str) -> None:
    openvino()
    if backend == "openvino-bf16" and not bf16_supported():
        raise BackendUnavailableError(_no_bf16_message())


def from_options(path: Path, backend: str, options: dict) -> "OpenVinoRunner":
    return OpenVinoRunner(path, backend=backend, threads=options.get("threads"),
                          performance_hint=options.get("performance_hint") or "LATENCY",
                          streams=options.get("streams"))


class OpenVinoRunner(Runner):
    device = "cpu"
    timer = "time.perf_counter (synchronous infer request)"

    def __init__(self, path: str | Path, backend: str = "openvino", threads: int | None = None,
                 performance_hint: str = "LATENCY", streams: int | None = None):
        super().__init__(path)
        if backend not in PRECISIONS:
            raise ValueError(f"OpenVinoRunner backend must be one of {', '.join(PRECISIONS)}, got {backend!r}")
        if performance_hint not in HINTS:
            raise ValueError(f"performance hint must be one of {', '.join(HINTS)}, got {performance_hint!r}")
        self.backend = backend
        ov = openvino()
        self._ov = ov
        graph = check_onnx_file(self.path)
        self.core = ov.Core()
        self.inference_precision = PRECISIONS[backend]
        if self.inference_precision == "bf16" and not bf16_supported(self.core):
            raise BackendUnavailableError(_no_bf16_message())
        self.threads, self.performance_hint, self.streams = threads, performance_hint, streams
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise ArtifactError(f"OpenVINO cannot read {self.path}: {readable(exc)}") from None
        self._read_onnx_facts(graph)
        self._compiled: dict[int, object] = {}
        self._request = None
        self.compiled_properties: dict[int, dict] = {}

    def _read_onnx_facts(self, graph) -> None:
        import onnx

        inputs = self.model.inputs
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path} has {len(inputs)} inputs; the benchmark feeds one image tensor")
        shape = inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise ArtifactError(f"{self.path} input has shape {shape}; expected N x C x H x W")
        dims = [d.get_length() if d.is_static else None for d in shape]
        if dims[0] is not None:
            self.fixed_batch = dims[0]
        model = graph if graph is not None else onnx.load(str(self.path), load_external_data=False)
        self.metadata = decode_metadata({p.key: p.value for p in model.metadata_props}, self.path.name)
        self.output_names = [o.name for o in model.graph.output]
        if all(d is not None for d in dims[1:]):
            self.input_shape = tuple(int(d) for d in dims[1:])
        elif isinstance(self.metadata.get("input_size"), list):
            self.input_shape = tuple(int(d) for d in self.metadata["input_size"])

    def _config(self) -> dict:
        import openvino.properties as props
        import openvino.properties.hint as hints

        ov = self._ov
        config = {hints.inference_precision: ov.Type.bf16 if self.inference_precision == "bf16" else ov.Type.f32,
                  hints.performance_mode: getattr(hints.PerformanceMode, self.performance_hint)}
        if self.threads:
            config[props.inference_num_threads] = int(self.threads)
        if self.streams:
            config[props.num_streams] = int(self.streams)
        return config

    def _prepare(self, batch: int) -> None:
        if batch not in self._compiled:
            model = self.model.clone()
            if self.fixed_batch is None:
                if self.input_shape is None:
                    raise ValueError(f"{self.path.name}: input size unknown (no static shape, no compress.input_size)")
                model.reshape({model.inputs[0].any_name: [batch, *self.input_shape]})
            try:
                self._compiled[batch] = self.core.compile_model(model, "CPU", self._config())
            except Exception as exc:  # noqa: BLE001
                raise ArtifactError(f"OpenVINO cannot compile {self.path.name} at batch {batch}: "
                                    f"{readable(exc)}") from None
            self.compiled_properties[batch] = self._read_properties(self._compiled[batch])
        self._request = self._compiled[batch].create_infer_request()

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        self._request.infer({0: x})
        count = len(self._request.model_outputs)
        return [np.array(self._request.get_output_tensor(i).data) for i in range(count)]

    def _step(self, x: np.ndarray):
        infer, feed, clock = self._request.infer, {0: x}, time.perf_counter

        def step():
            t0 = clock()
            infer(feed)
            return (clock() - t0) * 1000.0, None
        return step

    @property
    def ran_at(self) -> str:
        """The precision the compiled model computes in (int8 layers of a Q/DQ file stay int8)."""
        file_precision = self.metadata.get("precision") or "fp32"
        rest = "bf16" if self.inference_precision == "bf16" else "fp32"
        return f"int8 + {rest}" if file_precision == "int8" else rest

    @staticmethod
    def _read_properties(compiled) -> dict:
        """What OpenVINO settled on (streams and threads follow from the hint)."""
        import openvino.properties as props
        import openvino.properties.hint as hints

        actual = {}
        for key, prop in (("num_streams", props.num_streams), ("inference_num_threads", props.inference_num_threads),
                          ("inference_precision", hints.inference_precision),
                          ("performance_hint", hints.performance_mode)):
            try:
                actual[key] = _plain(compiled.get_property(prop))
            except Exception:  # noqa: BLE001 - an older OpenVINO may lack a property
                actual[key] = None
        return actual

    def info(self) -> dict:
        """Requested settings; the compiled ones per batch size are filled in as batches get compiled
        (the dict is shared, so a report row taken before the run shows them after it)."""
        return {**super().info(), "openvino_version": self._ov.__version__, "device_name": "CPU",
                "requested": {"inference_precision": self.inference_precision,
                              "performance_hint": self.performance_hint, "num_streams": self.streams,
                              "inference_num_threads": self.threads},
                "compiled_per_batch": self.compiled_properties, "ran_at": self.ran_at}

    def caveats(self, batch: int) -> list[str]:
        streams = (self.compiled_properties.get(batch) or {}).get("num_streams")
        if self.performance_hint == "THROUGHPUT" and isinstance(streams, int) and streams > 1:
            # The harness times one request at a time, so the other streams sit idle.
            return [f"{self.path.name} batch {batch}: OpenVINO's THROUGHPUT hint compiled {streams} streams, but the "
                    "harness runs one request at a time: the throughput is one stream's, not the hint's"]
        return []

    def close(self) -> None:
        self._request = None
        self._compiled = {}


def _plain(value):
    """OpenVINO property values as JSON-friendly text: Type → 'f32', enums → their name."""
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    if hasattr(value, "name") and not isinstance(value, (int, str)):
        return value.name
    return value if isinstance(value, (int, float, str)) else str(value)


def _no_bf16_message() -> str:
    from compress.runtime.cpu_features import BF16_FLAGS, cpu_flags

    flags = cpu_flags()
    return (f"openvino-bf16 needs a CPU with BF16 ({' or '.join(BF16_FLAGS)}); this CPU has neither "
            f"({len(flags)} flags read), so BF16 was not measured here")
