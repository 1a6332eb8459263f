"""Opening a runner: the factory over the backend registry.

| name            | artifact                         | module                           |
| --------------- | -------------------------------- | -------------------------------- |
| `ort-cpu`       | .onnx                            | compress.runtime.ort_runner      |
| `ort-cuda`      | .onnx                            | compress.runtime.ort_runner      |
| `ort-trt`       | .onnx                            | compress.runtime.ort_runner      |
| `trt`           | .engine (+ .engine.json sidecar) | compress.runtime.trt_runner      |
| `openvino`      | .onnx (FP32 / INT8 Q/DQ), f32    | compress.runtime.openvino_runner |
| `openvino-bf16` | .onnx, bf16 inference precision  | compress.runtime.openvino_runner |
| `torch`         | model directory                  | compress.torch_runner (registered by `compress`) |
| `torch-compile` | model directory                  | compress.torch_runner (registered by `compress`) |

The backends live in `compress.runtime.backends` (a registry other packages add to); each runner
subclasses `compress.runtime.runner_base.Runner`. This module imports neither a backend nor the base.
"""

from __future__ import annotations

from pathlib import Path

from compress.runtime.backends import Backend, backend_names, get_backend, resolve
from compress.runtime.errors import ArtifactError

# The runtime's own ONNX and GPU backends (registered when compress.runtime.backends is imported).
ONNX_BACKENDS = tuple(n for n in backend_names() if get_backend(n).artifacts == ("onnx",))
GPU_BACKENDS = tuple(n for n in backend_names() if get_backend(n).gpu)

_KIND_WORDS = {"onnx": "an ONNX file", "engine": "an engine file", "model_dir": "a model directory",
               "unknown": "a file of unknown kind"}


def open_runner(artifact: str | Path, backend: str = "ort-cpu", **options):
    """The runner for `backend` on `artifact`; options go to the backend (threads, device, cuda_graph, ...)."""
    spec = get_backend(backend)
    artifact = Path(artifact)
    check_artifact_fits(artifact, spec)
    return resolve(spec.runner)(artifact, spec.name, options)


def check_artifact_fits(artifact: Path, backend: str | Backend) -> None:
    """Refuse an artifact the backend cannot run, with the command that makes the right one."""
    spec = backend if isinstance(backend, Backend) else get_backend(backend)
    if not artifact.exists():
        raise ArtifactError(f"artifact not found: {artifact}")
    kind = artifact_kind(artifact)
    if kind not in spec.artifacts:
        raise ArtifactError(f"{spec.name} runs {spec.runs}, {artifact} is {_KIND_WORDS[kind]}"
                            + (f"; {spec.hint}" if spec.hint else ""))


def check_backend(backend: str) -> None:
    """Fail early, once, when the backend's packages are missing (instead of once per artifact)."""
    spec = get_backend(backend)
    resolve(spec.check)(spec.name)


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
