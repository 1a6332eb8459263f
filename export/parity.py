"""Parity of an ONNX file against a reference (a torch module, a callable, or another ONNX file),
run in ONNX Runtime on the CPU. Beyond tolerance is an error, never a warning."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compress.exporting.errors import ExportError, OnnxFileError, ParityError
from compress.exporting.exact_math import exact_float32
from compress.exporting.outputs import flatten_outputs

FP32_ATOL = 1e-3
FP32_MIN_AGREEMENT = 0.999
# FP16 keeps ~3 significant digits; errors grow with depth, so the bound scales with the logits.
FP16_REL_TOL = 2e-2
FP16_MIN_AGREEMENT = 0.99
ACCURACY_TOL = 0.0005  # 0.05 percentage points
# Graphs with several outputs (boxes in pixels, scores, feature maps) are compared each on its own scale:
# within FP32_ATOL and FP32_REL_TOL of its largest value, so that an output of tiny values is checked too.
FP32_REL_TOL = 1e-4
FP32_ABS_FLOOR = 1e-12
PARITY_BATCH = 256  # images per forward, in torch and in ONNX Runtime


@dataclass
class ParityResult:
    """Agreement of an ONNX file with its reference. For a classifier (one output of N×classes logits)
    `top1_agreement` is measured; for other graphs it is None, and `outputs` holds one entry per output
    (name, shape, max |Δ|, scale, tolerance), every one of which must be within its tolerance."""

    images: int
    max_abs_diff: float
    atol: float
    top1_agreement: float | None
    min_agreement: float
    logit_scale: float
    accuracy_reference: float | None = None
    accuracy_onnx: float | None = None
    accuracy_tol: float | None = None
    outputs: list[dict] | None = None
    float64: dict | None = None  # the review's record (check_parity's `review`) of the outputs that failed

    @property
    def passed(self) -> bool:
        reviewed = {o["name"]: o for o in (self.float64 or {}).get("outputs", [])}
        within = lambda name, diff, tol: (diff <= tol if name not in reviewed  # noqa: E731
                                          else reviewed[name]["onnx_error"] <= reviewed[name]["tolerance"])
        if self.outputs is not None:
            ok = all(within(o["name"], o["max_abs_diff"], o["atol"]) for o in self.outputs)
        elif reviewed:
            ok = all(o["onnx_error"] <= o["tolerance"] for o in reviewed.values())
        else:
            ok = self.max_abs_diff <= self.atol
        if self.top1_agreement is not None:
            ok = ok and self.top1_agreement >= self.min_agreement
        if self.accuracy_tol is not None and self.accuracy_reference is not None:
            ok = ok and abs(self.accuracy_reference - self.accuracy_onnx) <= self.accuracy_tol
        return ok

    def summary(self) -> str:
        if self.outputs is not None:
            worst = max(self.outputs, key=lambda o: o["max_abs_diff"] / max(o["atol"], 1e-30))
            bad = [o["name"] for o in self.outputs if o["max_abs_diff"] > o["atol"]]
            text = (f"{len(self.outputs)} outputs; worst {worst['name']}: max |Δ| {worst['max_abs_diff']:.3g} "
                    f"(tolerance {worst['atol']:.3g}, values up to {worst['scale']:.3g})"
                    + (f"; beyond tolerance: {', '.join(bad)}" if bad else "") + f" on {self.images} inputs")
            return text + self._accuracy_text() + self._float64_text()
        agreement = ("" if self.top1_agreement is None else
                     f", top-1 agreement {self.top1_agreement:.2%} (min {self.min_agreement:.2%})")
        text = f"max |Δlogit| {self.max_abs_diff:.3g} (atol {self.atol:.3g}){agreement} on {self.images} inputs"
        return text + self._accuracy_text() + self._float64_text()

    def _accuracy_text(self) -> str:
        if self.accuracy_reference is None:
            return ""
        return (f"; accuracy reference {self.accuracy_reference:.2%}, ONNX Runtime {self.accuracy_onnx:.2%} "
                f"(Δ {100 * (self.accuracy_onnx - self.accuracy_reference):+.2f} pp)")

    def _float64_text(self) -> str:
        if not self.float64:
            return ""
        worst = max(self.float64["outputs"], key=lambda o: o["onnx_error"] / max(o["tolerance"], 1e-30))
        what = "" if self.outputs is None else f" {worst['name']}"
        return (f"; reviewed{what} against float64 on the {worst['images']} inputs where it differed most: ONNX "
                f"Runtime is off by {worst['onnx_error']:.3g}, torch float32 by {worst['torch_fp32_error']:.3g} "
                f"(tolerance {self.float64['factor']:g}× torch's: {worst['tolerance']:.3g})")

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "passed": self.passed}
        for optional in ("outputs", "float64"):
            if out[optional] is None:
                out.pop(optional)
        return out


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
        from compress.runtime.errors import readable

        raise OnnxFileError(f"ONNX Runtime cannot load {path}: {readable(exc)}") from None


def run_onnx(session, inputs: np.ndarray, batch_size: int = PARITY_BATCH) -> np.ndarray:
    """A classifier's logits for `inputs`, in chunks: the second of a (probabilities, logits) pair of outputs
    (an ultralytics classifier), else the first output."""
    from compress.runtime.accuracy import logits_in

    outputs = [value for _, value in run_onnx_outputs(session, inputs, batch_size)]
    if len(outputs) == 2 and outputs[0].shape == outputs[1].shape:
        logits = logits_in(outputs)
        if logits is None:  # one file's logits would be compared with another's probabilities
            raise ExportError("the graph has two outputs of one shape, and the first is not the softmax of the "
                              "second: they are not a classifier's probabilities and logits")
        return logits
    return outputs[0]


def run_onnx_outputs(session, inputs: np.ndarray, batch_size: int = PARITY_BATCH) -> list[tuple[str, np.ndarray]]:
    """Every output, by name, for `inputs`, in chunks; a static batch dimension is honoured by padding the
    last chunk."""
    meta = session.get_inputs()[0]
    names = [o.name for o in session.get_outputs()]
    static = meta.shape[0] if isinstance(meta.shape[0], int) else None
    step = static or batch_size
    outs: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, len(inputs), step):
        chunk = np.ascontiguousarray(inputs[start:start + step], dtype=np.float32)
        n = len(chunk)
        if static and n < static:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], static - n, axis=0)])
        for i, value in enumerate(session.run(None, {meta.name: chunk})):
            outs[i].append(np.asarray(value)[:n].astype(np.float32))
    return [(name, np.concatenate(parts)) for name, parts in zip(names, outs)]


def reference_fn(reference, batch_size: int = PARITY_BATCH) -> Callable[[np.ndarray], np.ndarray]:
    """Turn a torch module, an ONNX path or a numpy callable into `f(inputs) -> logits` (the first output)."""
    outputs = reference_outputs_fn(reference, batch_size)
    return lambda x: outputs(x)[0][1]


def reference_outputs_fn(reference, batch_size: int = PARITY_BATCH) -> Callable[[np.ndarray], list[tuple[str, np.ndarray]]]:
    """Turn a torch module, an ONNX path or a numpy callable into `f(inputs) -> [(name, output), ...]`."""
    if isinstance(reference, (str, Path)):
        session = onnx_session(reference)
        return lambda x: run_onnx_outputs(session, x, batch_size)
    if _is_torch_module(reference):
        return _torch_fn(reference, batch_size)
    if callable(reference):
        return lambda x: _named_arrays(reference(x))
    raise TypeError(f"reference must be a torch module, an ONNX path or a callable, got {type(reference).__name__}")


def check_parity(reference, onnx_path: str | Path, inputs: np.ndarray, atol: float = FP32_ATOL,
                 min_agreement: float = FP32_MIN_AGREEMENT, *, labels: np.ndarray | None = None,
                 rel_tol: float | None = None, accuracy_tol: float | None = None, raise_on_failure: bool = True,
                 review: Callable | None = None) -> ParityResult:
    """Compare every output of `reference` and the ONNX file on `inputs` (float32 N×C×H×W, normalized).

    A classifier (one output) is judged as before: max |Δlogit| within `atol` (or `rel_tol` × max|logit|
    when given, for FP16) and top-1 agreement. A graph with several outputs is judged output by output,
    each against its own scale: within `rel_tol` × its max |value| when given, else within `atol` and
    FP32_REL_TOL × its max |value|, so that an output of small values is not passed by an absolute bound.
    With `labels` (classifiers only), both accuracies are measured; `accuracy_tol` then bounds their
    difference. `review(inputs, ref, got, tolerances)`, where given, looks again at the outputs beyond
    tolerance (compress.parity_review: in float64) and returns its record or None; a reviewed output is then
    judged by the record. Raises ParityError when beyond tolerance unless `raise_on_failure` is False.
    """
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim != 4 or len(inputs) == 0:
        raise ValueError(f"inputs must be a non-empty N×C×H×W array, got shape {inputs.shape}")
    ref = reference_outputs_fn(reference)(inputs)
    got = run_onnx_outputs(onnx_session(onnx_path), inputs)
    if len(ref) != len(got):
        raise ParityError(f"{onnx_path}: {len(got)} outputs ({', '.join(n for n, _ in got)}), the reference "
                          f"returns {len(ref)}")
    for (name, r), (_, g) in zip(ref, got):
        if r.shape != g.shape:
            what = "output shape" if len(got) == 1 else f"output {name} has shape"
            raise ParityError(f"{onnx_path}: {what} {g.shape} differs from the reference {r.shape}")
        if not np.isfinite(g).all():
            what = "logits" if len(got) == 1 else f"values in output {name}"
            raise ParityError(f"{onnx_path}: ONNX Runtime produced non-finite {what}")
        if not np.isfinite(r).all():
            # A tolerance relative to an infinite scale would pass any difference at all.
            what = "logits" if len(got) == 1 else f"values in output {name}"
            raise ParityError(f"{onnx_path}: the reference produced non-finite {what}, so there is nothing to "
                              "check the file against")
    if len(got) == 1:
        result = _classifier_result(ref[0][1], got[0][1], atol, min_agreement, rel_tol, len(inputs))
    else:
        from compress.runtime.accuracy import logits_in

        if labels is not None and not (len(got) == 2 and all(logits_in([v for _, v in o]) is not None
                                                              for o in (ref, got))):
            raise ValueError("labels measure a classifier's accuracy; this graph has several outputs")
        result = _outputs_result(ref, got, atol, min_agreement, rel_tol, len(inputs))
    if not result.passed and review is not None:
        tolerances = [result.atol] if result.outputs is None else [o["atol"] for o in result.outputs]
        result.float64 = review(inputs, ref, got, tolerances) or None
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(inputs):
            raise ValueError(f"{len(labels)} labels for {len(inputs)} inputs")
        ref0, got0 = ref[-1][1], got[-1][1]  # the one output, or the logits of (probabilities, logits)
        result.accuracy_reference = float((ref0.argmax(1) == labels).mean())
        result.accuracy_onnx = float((got0.argmax(1) == labels).mean())
        result.accuracy_tol = accuracy_tol
    if raise_on_failure and not result.passed:
        raise ParityError(f"{onnx_path} fails parity: {result.summary()}")
    return result


def _classifier_result(ref: np.ndarray, got: np.ndarray, atol, min_agreement, rel_tol, images) -> ParityResult:
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    if rel_tol is not None:
        atol = rel_tol * max(scale, np.finfo(np.float32).tiny)
    agreement = float((ref.argmax(1) == got.argmax(1)).mean()) if ref.ndim >= 2 and ref.size else None
    return ParityResult(images=images, max_abs_diff=float(np.abs(ref - got).max()) if ref.size else 0.0,
                        atol=float(atol), top1_agreement=agreement, min_agreement=float(min_agreement),
                        logit_scale=scale)


def _outputs_result(ref, got, atol, min_agreement, rel_tol, images) -> ParityResult:
    rows = []
    for (name, r), (_, g) in zip(ref, got):
        scale = float(np.abs(r).max()) if r.size else 0.0
        if rel_tol is not None:
            tol = rel_tol * max(scale, np.finfo(np.float32).tiny)
        else:
            tol = min(float(atol), max(FP32_REL_TOL * scale, FP32_ABS_FLOOR))
        diff = float(np.abs(r - g).max()) if r.size else 0.0
        rows.append({"name": name, "shape": list(r.shape), "max_abs_diff": diff, "scale": scale, "atol": tol})
    worst = max(rows, key=lambda o: o["max_abs_diff"] / max(o["atol"], 1e-30))
    return ParityResult(images=images, max_abs_diff=worst["max_abs_diff"], atol=worst["atol"], top1_agreement=None,
                        min_agreement=float(min_agreement), logit_scale=max(o["scale"] for o in rows), outputs=rows)


def _named_arrays(out) -> list[tuple[str, np.ndarray]]:
    try:
        flat = flatten_outputs(out)
    except ValueError:  # a plain list of numbers is one output
        flat = [("logits", out)]
    return [(n, np.asarray(v, dtype=np.float32)) for n, v in flat]


def _is_torch_module(obj) -> bool:
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _torch_fn(model, batch_size: int) -> Callable[[np.ndarray], list[tuple[str, np.ndarray]]]:
    import torch

    def run(x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        was_training = model.training
        model.eval()
        names: list[str] = []
        parts: list[list[np.ndarray]] = []
        try:
            with torch.inference_mode(), exact_float32():
                for start in range(0, len(x), batch_size):
                    # A copy: a forward that scales its input in place would otherwise change the caller's
                    # array, and ONNX Runtime, which runs next, would see other inputs than the reference did.
                    chunk = torch.from_numpy(np.array(x[start:start + batch_size], copy=True)).to(device)
                    flat = flatten_outputs(model(chunk))
                    if not parts:
                        names, parts = [n for n, _ in flat], [[] for _ in flat]
                    for i, (_, t) in enumerate(flat):
                        parts[i].append(t.float().cpu().numpy())
        finally:
            model.train(was_training)
        return [(n, np.concatenate(p)) for n, p in zip(names, parts)]

    return run
