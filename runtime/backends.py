"""The registry of benchmark backends: a name, the kinds of artifact it runs, and where its runner lives.

The runtime registers its own backends (ONNX Runtime, TensorRT, OpenVINO) here. Another package adds
one with `register_backend`: the PyTorch reference backends (`torch`, `torch-compile`) need model
directories and so live on the training side, which registers them when `compress` is imported.
Runners and availability checks are named as "module:function" and imported only when chosen, so
this module imports nothing but the standard library.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Iterable

ONNX, ENGINE, MODEL_DIR = "onnx", "engine", "model_dir"


@dataclass(frozen=True)
class Backend:
    """One backend. `runner` is "module:function" taking (path, backend name, options dict) and
    returning a Runner; `check` is "module:function" taking the backend name and raising when the
    backend cannot run here (a missing package or execution provider)."""

    name: str
    artifacts: tuple[str, ...]  # artifact kinds it runs: onnx, engine, model_dir
    runner: str
    check: str
    gpu: bool = False  # the measurements happen on a CUDA device
    runs: str = ""  # what it runs, for messages: ".onnx files"
    hint: str = ""  # how to make such an artifact

    def __post_init__(self):
        if not self.name or self.name != self.name.strip() or "," in self.name:
            raise ValueError(f"a backend name must be non-empty without commas or surrounding spaces, got "
                             f"{self.name!r}")
        unknown = set(self.artifacts) - {ONNX, ENGINE, MODEL_DIR}
        if not self.artifacts or unknown:
            raise ValueError(f"backend {self.name}: artifacts must be among onnx, engine, model_dir")


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend, *, replace: bool = False) -> Backend:
    """Add a backend; registering a name twice is refused unless `replace` (or it is the same backend)."""
    held = _REGISTRY.get(backend.name)
    if held is not None and held != backend and not replace:
        raise ValueError(f"backend {backend.name!r} is already registered (runner {held.runner})")
    _REGISTRY[backend.name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def resolve(spec: str) -> Callable:
    """The function a "module:function" spec names."""
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def parse_backends(items: str | Iterable[str] | None, default: str = "ort-cpu") -> list[str]:
    """Backend names from option values, each a name or a comma-separated list ("ort-cpu,openvino").

    No value at all means `default`. An empty name (`--backend ''`, "ort-cpu,,trt"), a name given twice
    and an unknown name are refused with a ValueError naming it."""
    if items is None or (not isinstance(items, str) and not list(items)):
        return [default]
    values = [items] if isinstance(items, str) else list(items)
    chosen: list[str] = []
    for value in values:
        for name in str(value).split(","):
            name = name.strip()
            if not name:
                raise ValueError(f"empty backend name in {value!r}; choose from {', '.join(_REGISTRY)}")
            get_backend(name)
            if name in chosen:
                raise ValueError(f"backend {name!r} is given twice")
            chosen.append(name)
    return chosen


_ONNX_HINT = "make one with `compress export MODEL_DIR --onnx OUT.onnx`"
for _name, _gpu in (("ort-cpu", False), ("ort-cuda", True), ("ort-trt", True)):
    register_backend(Backend(_name, (ONNX,), "compress.runtime.ort_runner:from_options",
                             "compress.runtime.ort_runner:check_available", gpu=_gpu, runs=".onnx files",
                             hint=_ONNX_HINT))
register_backend(Backend("trt", (ENGINE,), "compress.runtime.trt_runner:from_options",
                         "compress.runtime.trt_runner:check_available", gpu=True, runs="TensorRT .engine files",
                         hint="build one with `compress export MODEL.onnx --trt OUT.engine`"))
for _name in ("openvino", "openvino-bf16"):
    register_backend(Backend(_name, (ONNX,), "compress.runtime.openvino_runner:from_options",
                             "compress.runtime.openvino_runner:check_available", runs=".onnx files", hint=_ONNX_HINT))
