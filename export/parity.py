"""Parity of an ONNX file against a reference (a torch module, a callable, or another ONNX file),
run in ONNX Runtime on the CPU. Beyond tolerance is an error, never a warning."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compress.exporting.errors import OnnxFileError, ParityError

FP32_ATOL = 1e-3
FP32_MIN_AGREEMENT = 0.999
# FP16 keeps ~3 significant digits; errors grow with depth, so the bound scales with the logits.
FP16_REL_TOL = 2e-2
FP16_MIN_AGREEMENT = 0.99
ACCURACY_TOL = 0.0005  # 0.05 percentage points


@dataclass
class ParityResult:
    images: int
    max_abs_diff: float
    atol: float
    top1_agreement: float
    min_agreement: float
    logit_scale: float
    accuracy_reference: float | None = None
    accuracy_onnx: float | None = None
    accuracy_tol: float | None = None

    @property
    def passed(self) -> bool:
        ok = self.max_abs_diff <= self.atol and self.top1_agreement >= self.min_agreement
        if self.accuracy_tol is not None and self.accuracy_reference is not None:
            ok = ok and abs(self.accuracy_reference - self.accuracy_onnx) <= self.accuracy_tol
        return ok

    def summary(self) -> str:
        text = (f"max |Δlogit| {self.max_abs_diff:.3g} (atol {self.atol:.3g}), top-1 agreement "
                f"{self.top1_agreement:.2%} (min {self.min_agreement:.2%}) on {self.images} inputs")
        if self.accuracy_reference is not None:
            text += (f"; accuracy reference {self.accuracy_reference:.2%}, ONNX Runtime {self.accuracy_onnx:.2%} "
                     f"(Δ {100 * (self.accuracy_onnx - self.accuracy_reference):+.2f} pp)")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def onnx_session(onnx_path: str | Path, threads: int | None = None):
    """A CPU ONNX Runtime session; an unreadable file gives a one-line OnnxFileError."""
    import onnxruntime as ort

    path = Path(onnx_path)
    if not path.is_file():
        raise OnnxFileError(f"ONNX file not found: {path}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OnnxFileError(f"ONNX Runtime cannot load {path}: {first[:300]}") from None


def run_onnx(session, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for `inputs`, in chunks; a static batch dimension is honoured by padding the last chunk."""
    meta = session.get_inputs()[0]
    static = meta.shape[0] if isinstance(meta.shape[0], int) else None
    step = static or batch_size
    outs = []
    for start in range(0, len(inputs), step):
        chunk = np.ascontiguousarray(inputs[start:start + step], dtype=np.float32)
        n = len(chunk)
        if static and n < static:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], static - n, axis=0)])
        outs.append(session.run(None, {meta.name: chunk})[0][:n].astype(np.float32))
    return np.concatenate(outs)


def reference_fn(reference, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """Turn a torch module, an ONNX path or a numpy callable into `f(inputs) -> logits`."""
    if isinstance(reference, (str, Path)):
        session = onnx_session(reference)
        return lambda x: run_onnx(session, x, batch_size)
    if _is_torch_module(reference):
        return _torch_fn(reference, batch_size)
    if callable(reference):
        return lambda x: np.asarray(reference(x), dtype=np.float32)
    raise TypeError(f"reference must be a torch module, an ONNX path or a callable, got {type(reference).__name__}")


def check_parity(reference, onnx_path: str | Path, inputs: np.ndarray, atol: float = FP32_ATOL,
                 min_agreement: float = FP32_MIN_AGREEMENT, *, labels: np.ndarray | None = None,
                 rel_tol: float | None = None, accuracy_tol: float | None = None, batch_size: int = 256,
                 raise_on_failure: bool = True) -> ParityResult:
    """Compare logits of `reference` and the ONNX file on `inputs` (float32 N×C×H×W, normalized).

    `rel_tol`, when given, replaces `atol` by `rel_tol × max|reference logit|` (for FP16).
    With `labels`, both accuracies are measured; `accuracy_tol` then bounds their difference.
    Raises ParityError when beyond tolerance unless `raise_on_failure` is False.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 4 or len(inputs) == 0:
        raise ValueError(f"inputs must be a non-empty N×C×H×W array, got shape {inputs.shape}")
    ref = reference_fn(reference, batch_size)(inputs)
    got = run_onnx(onnx_session(onnx_path), inputs, batch_size)
    if ref.shape != got.shape:
        raise ParityError(f"{onnx_path}: output shape {got.shape} differs from the reference {ref.shape}")
    if not np.isfinite(got).all():
        raise ParityError(f"{onnx_path}: ONNX Runtime produced non-finite logits")
    scale = float(np.abs(ref).max())
    if rel_tol is not None:
        atol = rel_tol * max(scale, np.finfo(np.float32).tiny)
    result = ParityResult(
        images=len(inputs), max_abs_diff=float(np.abs(ref - got).max()), atol=float(atol),
        top1_agreement=float((ref.argmax(1) == got.argmax(1)).mean()), min_agreement=float(min_agreement),
        logit_scale=scale)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(inputs):
            raise ValueError(f"{len(labels)} labels for {len(inputs)} inputs")
        result.accuracy_reference = float((ref.argmax(1) == labels).mean())
        result.accuracy_onnx = float((got.argmax(1) == labels).mean())
        result.accuracy_tol = accuracy_tol
    if raise_on_failure and not result.passed:
        raise ParityError(f"{onnx_path} fails parity: {result.summary()}")
    return result


def _is_torch_module(obj) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _torch_fn(model, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = model.training
        model.eval()
        outs = []
        try:
            with torch.inference_mode():
                for start in range(0, len(x), batch_size):
                    chunk = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size])).to(device)
                    outs.append(model(chunk).float().cpu().numpy())
        finally:
            model.train(was_training)
        return np.concatenate(outs)

    return run
