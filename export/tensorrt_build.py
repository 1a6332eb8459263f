"""ONNX → TensorRT engine, one code path for TensorRT 10.x (JetPack 6 ships 10.3) and 11.x.

Precision lives in the ONNX file (FP32, FP16 from `convert_fp16`, or INT8 as explicit Q/DQ nodes),
so the network is created strongly typed and no precision builder flags or calibrators are used:
TensorRT 11 removed BuilderFlag.FP16/INT8 and the calibrators, and made strong typing the only
mode (docs.nvidia.com/deeplearning/tensorrt, "Migrating from TensorRT 10.x to 11.x").
`tensorrt` and `cuda-python` are optional (`pip install 'cnn-compress[trt]'`) and imported here
only inside the functions that need them.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from compress.exporting._files import atomic_write_bytes, atomic_write_many, sha256_file
from compress.exporting.engine_sidecar import sidecar_path, sidecar_text
from compress.exporting.errors import EngineBuildError, MissingExtraError, TrtReadinessError

TRT_EXTRA = "pip install 'cnn-compress[trt]'"


@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


DEFAULT_PROFILE = BatchProfile(1, 8, 32)


def parse_profile(text: str | int) -> BatchProfile:
    """'1:8:32' (min:opt:max batch) or a single 'N' for a fixed batch."""
    parts = str(text).split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"batch profile must be N or MIN:OPT:MAX integers, got {text!r}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {text!r}")
    return BatchProfile(*values)


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingExtraError(f"TensorRT is not installed: {TRT_EXTRA} "
                                "(on Jetson, the JetPack python3-libnvinfer package)") from None
    return trt


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of a CUDA device, via cuda-python."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout
        except ImportError:
            raise MissingExtraError(f"cuda-python is not installed: {TRT_EXTRA}") from None
    err, prop = cudart.cudaGetDeviceProperties(device)
    if err != cudart.cudaError_t.cudaSuccess:
        raise EngineBuildError(f"cannot query CUDA device {device}: {err}")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), f"{prop.major}.{prop.minor}"


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, profile: BatchProfile | None = None,
                 workspace_mb: int | None = None, timing_cache: str | Path | None = None,
                 opt_level: int | None = None, dla_core: int | None = None, precision: str | None = None,
                 verbose: bool = False, log: Callable[[str], None] = print) -> dict:
    """Build `engine_path` and its sidecar from an ONNX file; returns the sidecar contents.

    `profile` sets min:opt:max of the batch dimension (default 1:8:32; a static batch must match it).
    `precision`, when given, must agree with what the ONNX file holds.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    held, meta = _checked_source(onnx_path, precision, dla_core, opt_level)

    trt = import_tensorrt()
    gpu_name, capability = gpu_identity()
    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    builder, network = _parsed_network(trt, logger, onnx_path)
    config = _builder_config(trt, builder, workspace_mb, opt_level, dla_core)
    shapes = _set_profile(builder, network, config, profile)
    cache = _attach_timing_cache(config, timing_cache, log)

    log(f"building TensorRT {trt.__version__} engine for {gpu_name} (sm {capability}) from {onnx_path.name} "
        f"({held}, batch {shapes['min'][0]}:{shapes['opt'][0]}:{shapes['max'][0]})")
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_time = time.perf_counter() - t0
    if plan is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineBuildError("TensorRT built a plan it cannot load back")
    # device_memory_size was removed in TensorRT 11; its _v2 successor exists in 10.x too.
    device_memory = getattr(engine, "device_memory_size_v2", None)
    if cache is not None:
        atomic_write_bytes(timing_cache, config.get_timing_cache().serialize())

    info = {
        "tensorrt_version": trt.__version__,
        "gpu_name": gpu_name,
        "compute_capability": capability,
        "precision": held,
        "profile": shapes,
        "onnx_path": str(onnx_path),
        "onnx_sha256": sha256_file(onnx_path),
        "build_time_s": round(build_time, 3),
        "built_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "engine_size": memoryview(plan).nbytes,
        "device_memory_bytes": None if device_memory is None else int(device_memory),
        "strongly_typed": True,
        "builder_optimization_level": opt_level,
        "workspace_mb": workspace_mb,
        "dla_core": dla_core,
        "timing_cache": None if timing_cache is None else str(timing_cache),
        "metadata": meta,
    }
    # The sidecar lands first, the old engine removed before it: an engine at its final name always has its
    # own sidecar beside it.
    atomic_write_many([(sidecar_path(engine_path), sidecar_text(info).encode()), (engine_path, plan)])
    return info


def _checked_source(onnx_path: Path, precision: str | None, dla_core: int | None, opt_level: int | None):
    """(precision held, export metadata) of an ONNX file TensorRT can take with these options; refused otherwise."""
    from compress.exporting.fp16 import precision_of
    from compress.exporting.metadata import metadata_of
    from compress.exporting.onnx_file import load_onnx
    from compress.exporting.trt_readiness import check_model, errors

    model = load_onnx(onnx_path)
    problems = errors(check_model(model))
    if problems:
        raise TrtReadinessError(f"{onnx_path} is not TensorRT-ready ({len(problems)} error(s); first: {problems[0]}); "
                                f"see `compress export --check-trt {onnx_path}`")
    held = precision_of(model)
    if precision is not None and precision != held:
        raise EngineBuildError(f"{onnx_path} holds a {held} model, not {precision}")
    if dla_core is not None and held == "fp32":
        raise EngineBuildError("DLA runs FP16 or INT8 networks only: build from an FP16 or INT8 ONNX file")
    if opt_level is not None and not 0 <= opt_level <= 5:
        raise ValueError(f"builder optimization level must be in 0..5, got {opt_level}")
    meta = metadata_of(model)
    return held, meta


def _parsed_network(trt, logger, onnx_path: Path):
    """(builder, network) with the ONNX file parsed into the network."""
    builder = trt.Builder(logger)
    # Strongly typed: tensor types come from the ONNX file. The flag is deprecated (and ignored)
    # in TensorRT 11, where strong typing is the only mode, so it is looked up rather than assumed.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 0 if strongly_typed is None else 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        details = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT's ONNX parser rejected {onnx_path}: {details[:500] or 'no details'}")
    return builder, network


def _builder_config(trt, builder, workspace_mb: int | None, opt_level: int | None, dla_core: int | None):
    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if opt_level is not None:
        config.builder_optimization_level = int(opt_level)
    if dla_core is not None:
        if builder.num_DLA_cores <= dla_core:
            raise EngineBuildError(f"DLA core {dla_core} requested, this device has {builder.num_DLA_cores}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config


def _set_profile(builder, network, config, profile: BatchProfile | None) -> dict:
    """One optimization profile over the batch dimension (default 1:8:32); other dimensions are static."""
    if network.num_inputs != 1:
        raise EngineBuildError(f"expected one network input, found {network.num_inputs}")
    tensor = network.get_input(0)
    dims = list(tensor.shape)
    if any(d < 0 for d in dims[1:]):
        raise EngineBuildError(f"input {tensor.name} has dynamic dimensions besides the batch: {dims}")
    if dims[0] >= 0:
        if profile is not None and (profile.min, profile.opt, profile.max) != (dims[0],) * 3:
            raise EngineBuildError(f"input {tensor.name} has a static batch of {dims[0]}; "
                                   f"the profile {profile} cannot apply (export with a dynamic batch)")
        shape = [dims[0], *dims[1:]]
        return {"input": tensor.name, "min": shape, "opt": shape, "max": shape}
    profile = profile or DEFAULT_PROFILE
    shapes = {k: [getattr(profile, k), *dims[1:]] for k in ("min", "opt", "max")}
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(tensor.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(opt_profile)
    return {"input": tensor.name, **shapes}


def _attach_timing_cache(config, timing_cache, log):
    if timing_cache is None:
        return None
    path = Path(timing_cache)
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, False):
        log(f"timing cache {path} does not match this GPU/TensorRT; starting a fresh one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache
