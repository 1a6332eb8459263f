"""A second look, in float64, at an FP32 export parity check that failed its tolerance.

A network whose values run to thousands (an overfit head, a pruned network whose activations grew) differs
from itself between float32 and float64 by more than the absolute tolerance: ONNX Runtime then "fails" parity
with the torch model only because both round. For each output that failed, on the images where it failed most,
the review runs the torch model on the CPU again in float32 (twice) and in float64. It passes the output when:

- the float32 reruns are identical, and agree with the reference's first run within the tolerance below (a
  model that draws random numbers in eval, or normalizes over the batch, gets no review: its own runs
  differ, so they cannot tell rounding from another computation; the reference itself runs without TF32,
  compress.exporting.exact_math);
- ONNX Runtime's error against float64 is within FLOAT64_FACTOR times torch float32's own error there.

Outputs that passed their tolerance keep it; only the failed ones are reviewed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# ONNX Runtime's CPU kernels sum in other orders than torch's; on a trained MnasNet with logits up to 1.3e3
# and its pruned version (1.8e5) its error against float64 was 2.5-2.8x torch float32's (2026-12-07).
FLOAT64_FACTOR = 10.0
IMAGES_PER_OUTPUT = 8
MAX_IMAGES = 32


def review(model: nn.Module, inputs: np.ndarray, ref: list[tuple[str, np.ndarray]],
           got: list[tuple[str, np.ndarray]], tolerances: list[float]) -> dict | None:
    """{"images", "factor", "outputs": [{name, images, torch_fp32_error, onnx_error, tolerance, rerun_error}]}
    for the outputs beyond their tolerance, or None where the model cannot be reviewed (the failure stands)."""
    failed = [i for i, ((_, r), (_, g), tol) in enumerate(zip(ref, got, tolerances))
              if r.shape == g.shape and r.size and not float(np.abs(r - g).max()) <= tol]
    if not failed:
        return None
    try:
        rows = _worst_rows(ref, got, tolerances, failed, len(inputs))
        x = torch.from_numpy(np.array(inputs[rows], dtype=np.float32))
        first, second, exact = _cpu_runs(model, x)
    except Exception:  # noqa: BLE001 - a model that cannot be copied, run on the CPU or in float64: no review
        return None
    if len(first) != len(ref) or len(exact) != len(ref):
        return None
    outputs = []
    for i in failed:
        name, r = ref[i]
        a, b, e = first[i][1], second[i][1], exact[i][1]
        if a.shape != r[rows].shape or not np.array_equal(a, b):
            return None  # not one function of its input: rounding cannot be told from anything else
        torch_error = float(np.abs(a - e).max())
        tolerance = max(float(tolerances[i]), FLOAT64_FACTOR * torch_error)
        rerun_error = float(np.abs(a - r[rows]).max())
        if not rerun_error <= tolerance:
            return None  # the reference's first run is not what the model computes on these images alone
        outputs.append({"name": name, "images": len(rows), "torch_fp32_error": torch_error,
                        "onnx_error": float(np.abs(got[i][1][rows] - e).max()), "tolerance": tolerance,
                        "rerun_error": rerun_error})
    return {"images": len(rows), "factor": FLOAT64_FACTOR, "outputs": outputs}


def _worst_rows(ref, got, tolerances, failed: list[int], n: int) -> np.ndarray:
    """The images where each failed output is furthest beyond its tolerance: IMAGES_PER_OUTPUT each, fewer
    when many outputs failed (MAX_IMAGES in all), but always each one's worst."""
    each = max(1, min(IMAGES_PER_OUTPUT, MAX_IMAGES // len(failed)))
    chosen: set[int] = set()
    for i in failed:
        r, g = ref[i][1], got[i][1]
        per_image = np.abs(r - g).reshape(n, -1).max(axis=1) / max(float(tolerances[i]), 1e-30)
        chosen.update(int(k) for k in np.argsort(per_image)[::-1][:each])
    return np.array(sorted(chosen))


def _cpu_runs(model: nn.Module, x: torch.Tensor):
    """(float32 run, float32 rerun, float64 run) of copies of `model` on the CPU, outputs flattened."""
    from compress.exporting.outputs import flatten_outputs
    from compress.slimming.float64_check import float64_copy, float64_forward

    tensors = lambda out: [t for _, t in flatten_outputs(out)]  # noqa: E731 - in the order parity names them
    exact, why = float64_forward(model, lambda: tensors(float64_copy(model).cpu().eval()(x.to(torch.float64))))
    if why:
        raise ValueError(why)
    cpu32 = float64_copy(model).to(torch.float32).cpu().eval()  # a copy: the caller's model stays where it is
    with torch.inference_mode():
        first, second = tensors(cpu32(x.clone())), tensors(cpu32(x.clone()))
    as_arrays = lambda outs: [(str(k), t.detach().double().numpy()) for k, t in enumerate(outs)]  # noqa: E731
    return as_arrays(first), as_arrays(second), as_arrays(exact)
