"""PyTorch eager and `torch.compile` references, for comparing the deployed artifacts against.

The backends `torch` and `torch-compile` of `compress bench`. They run model directories, which only
the training side can load (`compress.artifact.load_model_dir`), so they live here and are registered
into the runtime's backend registry by `compress.torch_backends`; the runtime itself never imports
torch or compress/. torch is imported inside the functions and methods only: importing this module
without PyTorch works, constructing a runner there raises a clear error. An .onnx path stands for
the model directory it sits in.

A model may return a tensor, a tuple/list or a dict of tensors: every tensor is one output, in order
(dict keys name theirs).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from compress.runtime.errors import ArtifactError, MissingExtraError
from compress.runtime.optional import has_module
from compress.runtime.runner_base import Runner

NO_TORCH = "pip install torch (or use an ort-* / trt backend, which do not)"


def check_available(backend: str) -> None:
    if not has_module("torch"):
        raise MissingExtraError(f"{backend} needs PyTorch: {NO_TORCH}")


def from_options(path: Path, backend: str, options: dict) -> "TorchRunner":
    return TorchRunner(path, compile=backend == "torch-compile", device=options.get("torch_device"))


def resolve_model_dir(path: str | Path) -> Path:
    """The model directory behind `path`: itself, or the directory holding an .onnx file with a model.json."""
    path = Path(path)
    if path.is_dir() and (path / "model.json").is_file():
        return path
    if path.suffix == ".onnx" and (path.parent / "model.json").is_file():
        return path.parent
    raise ArtifactError(f"{path} is not a model directory (no model.json), nor an .onnx file beside one; "
                        "the torch backends run model directories")


def _import_torch():
    try:
        import torch
    except ImportError:
        raise MissingExtraError(f"the torch backends need PyTorch: {NO_TORCH}") from None
    return torch


class TorchRunner(Runner):
    def __init__(self, path: str | Path, compile: bool = False, device: str | None = None):
        super().__init__(path)
        torch = _import_torch()
        self._torch = torch
        self.model_dir = resolve_model_dir(path)
        from compress.artifact import load_model_dir

        model, meta = load_model_dir(self.model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        if self.device.startswith("cuda"):
            # The peak gpu_memory reports is this runner's (its weights included): without a reset it is the
            # process's, which after an earlier, larger artifact is that artifact's. After the move, because
            # "cuda:0" alone does not start CUDA and the reset would refuse an uninitialised device.
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
        self.backend = "torch-compile" if compile else "torch"
        if compile:
            self.model = torch.compile(self.model)
        self.input_shape = tuple(int(d) for d in meta["input_size"])
        norm = meta.get("normalization") or {}
        self.metadata = {"classes": meta.get("classes"), "mean": norm.get("mean"), "std": norm.get("std"),
                         "input_size": meta.get("input_size"), "arch": meta.get("arch"), "precision": "fp32"}
        if self.device.startswith("cuda"):
            self.timer = "torch.cuda.Event on the current stream"
            self.compute_timing = "forward pass alone (input already on the GPU)"

    def _infer(self, x: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            named = flatten_outputs(self.model(torch.from_numpy(x).to(self.device)), torch, self.model_dir)
        self.output_names = [name for name, _ in named]
        return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for _, t in named]

    def _step(self, x: np.ndarray):
        torch, model = self._torch, self.model
        host = torch.from_numpy(np.ascontiguousarray(x))
        if not self.device.startswith("cuda"):
            clock = time.perf_counter

            def step():
                t0 = clock()
                with torch.inference_mode():
                    model(host)
                return (clock() - t0) * 1000.0, None
            return step

        host = host.pin_memory()
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]

        def step():
            e0, e1, e2, e3 = events
            with torch.inference_mode():
                e0.record()
                dev = host.to(self.device, non_blocking=True)
                e1.record()
                out = model(dev)
                e2.record()
                for _, tensor in flatten_outputs(out, torch, self.model_dir):
                    tensor.to("cpu")
                e3.record()
            e3.synchronize()
            return e0.elapsed_time(e3), e1.elapsed_time(e2)
        return step

    def info(self) -> dict:
        torch = self._torch
        out = {**super().info(), "torch_version": torch.__version__, "model_dir": str(self.model_dir),
               "torch_threads": torch.get_num_threads()}
        if self.device.startswith("cuda"):
            out["gpu"] = torch.cuda.get_device_name(torch.device(self.device))
        return out

    def gpu_memory(self) -> dict | None:
        if not self.device.startswith("cuda"):
            return None
        torch = self._torch
        return {"torch_max_allocated_bytes": int(torch.cuda.max_memory_allocated(torch.device(self.device)))}

    def close(self) -> None:
        self.model = None


def flatten_outputs(out, torch, where, name: str = "output") -> list[tuple[str, object]]:
    """(name, tensor) for every tensor a forward returned: a tensor, or tuples/lists/dicts of them."""
    if isinstance(out, torch.Tensor):
        return [(name, out)]
    if isinstance(out, dict):
        items = [(str(k) if name == "output" else f"{name}.{k}", v) for k, v in out.items()]
    elif isinstance(out, (list, tuple)):
        items = [(f"{name}{i}" if name == "output" else f"{name}.{i}", v) for i, v in enumerate(out)]
    else:
        raise ArtifactError(f"{where}: the model returned {type(out).__name__}; the torch backends measure models "
                            "returning tensors, or tuples, lists or dicts of them")
    return [pair for k, v in items for pair in flatten_outputs(v, torch, where, k)]
