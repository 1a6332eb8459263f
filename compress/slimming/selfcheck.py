"""The self-check after every pruning: the pruned network must compute what pruning says it computes.

The reference is the unpruned network (a copy taken before anything changed), with the removed channels
silenced the way pruning treats them: their BN γ set to zero (and β too without compensation), and at
every layer that reads them, those inputs replaced by nothing plus the constant that compensation folded
into that layer. The pruned network must match it within `TOLERANCE` (relative to the largest output
magnitude, per output tensor: float32 re-association across dozens of layers, never a changed
function). Every tensor the model returns is compared (detectors return several).

In the same forward (a doubled batch) the reference also runs without the replacement: the unpruned
network with the removed channels' γ zeroed. The difference to that is the approximation compensation
makes (zero padding at borders, a squeeze-and-excitation gate on a constant), reported as
`approximation`; where γ = β = 0 it is exact as well.

A failure names the first module whose output diverges (forward hooks on both networks) and the caller's
model is left unchanged (compress.slimming.engine restores it).

The per-tensor scale checks small values beside large ones in one tensor loosely, so when it passes the
comparison is repeated with both networks in float64 (compress.slimming.float64_check), where no
rounding allowance is needed; its record is `float64`.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from compress.errors import CompressError, first_line
from compress.exporting.exact_math import exact_float32
from compress.slimming.reference import (flatten_outputs, reference_outputs, relative_difference,
                                          silenced_outputs)


class SelfCheckError(CompressError):
    """The pruned network is not what pruning says it is; `module` names where it first went wrong."""

    def __init__(self, message: str, module: str | None):
        super().__init__(message)
        self.module = module
        self.units = None  # set by the engine: the units of the attempt that failed


TOLERANCE = {torch.float16: 5e-2, torch.bfloat16: 5e-2}  # every other dtype: DEFAULT_TOLERANCE
DEFAULT_TOLERANCE = 1e-4


def tolerance_for(model: nn.Module) -> float:
    p = next(iter(model.parameters()), None)
    return TOLERANCE.get(p.dtype if p is not None else torch.float32, DEFAULT_TOLERANCE)


def self_check(pruned: nn.Module, reference: nn.Module, removal, deltas: dict, probe: torch.Tensor, *,
               compensate: bool, folded: dict | None = None, applied: dict | None = None,
               elsewhere: list = ()) -> dict:
    """Compare; raise CompressError naming the first diverging module, or return the check's record.
    With `applied` (compress.slimming.float64_check.applied_deltas: what each fold changed) the
    comparison is repeated in float64 at `float64_check.TOLERANCE`. `elsewhere`, (label, input) pairs
    such as a larger image, add their approximation to the record (compensation's constants are fitted at
    the example's size, and a gate or a border share can differ at another)."""
    t0 = time.perf_counter()
    tol = tolerance_for(reference)
    was = pruned.training, reference.training
    pruned.eval()
    reference.eval()
    try:
        if applied is not None:
            from compress.slimming.float64_check import mismatched_fold

            bad = mismatched_fold(applied, deltas, reference, folded or {})
            if bad is not None:
                raise SelfCheckError(f"the constant folded for {bad} is not the one compensation measured; "
                                     "the model is left unchanged", bad)
        with exact_float32(), torch.no_grad():
            try:
                got = flatten_outputs(pruned(probe))
            except Exception as exc:  # a broken network: say where it breaks
                from compress.slimming.diagnose import failing_module

                module, where = failing_module(pruned, probe)
                raise SelfCheckError(f"the pruned {type(reference).__name__} fails in {where} "
                                     f"({type(exc).__name__}: {first_line(exc)}); the model is left unchanged",
                                     module) from None
            # Each constant after its consumer, at every call: what the removal should compute, however
            # the constants were folded (a fold into the wrong place must show here).
            loose, want, forwards = reference_outputs(reference, removal, deltas, probe, compensate=compensate,
                                                      shapes=[t.shape for t in got])
            forwards += 1
        if want and not any(bool(torch.isfinite(t).any()) for t in want if t.numel()):
            # relative_difference compares finite values only: with none, it would report 0.0 and pass.
            raise SelfCheckError(f"the unpruned {type(reference).__name__}'s outputs on the probe hold no finite "
                                 "value, so nothing could be compared; the model is left unchanged", None)
        diff = relative_difference(got, want)
        if not diff <= tol:
            from compress.slimming.diagnose import first_divergence

            module, where = first_divergence(pruned, reference, removal, deltas, probe, compensate=compensate,
                                             tol=tol, folded=folded)
            shown = "a different output structure" if diff == float("inf") else f"max relative difference {diff:.1e}"
            raise SelfCheckError(f"pruning would change {type(reference).__name__}'s output beyond the self-check "
                                 f"tolerance ({shown} > {tol:g}); outputs first diverge at {where}; "
                                 "the model is left unchanged", module)
        approx = relative_difference(got, loose) if loose is not None else None
        approx = approx if approx is None or math.isfinite(approx) else None  # plans are strict JSON
        by_input = {"example size": approx, **{label: _approximation(pruned, reference, removal, x, compensate)
                                                 for label, x in elsewhere}}
        found = [v for v in by_input.values() if v is not None]
        approx = max(found) if found else None
        exact = None if applied is None else _float64(pruned, reference, removal, applied, probe, compensate,
                                                      folded)
    finally:
        pruned.train(was[0])
        reference.train(was[1])
    record = {"max_relative_difference": diff, "tolerance": tol,
              "approximation": approx, "approximation_by_input": by_input, "forwards": forwards,
              "probe": list(probe.shape), "seconds": round(time.perf_counter() - t0, 3)}
    if exact is not None:
        record["float64"] = exact
    return record


def _approximation(pruned, reference, removal, x, compensate) -> float | None:
    """The pruned network against the unpruned one with the removed channels' γ silenced, on `x`; None
    where either network cannot take `x` (a classifier of one input size)."""
    try:
        with exact_float32(), torch.no_grad():
            got = flatten_outputs(pruned(x))
            loose = silenced_outputs(reference, removal, x, compensate=compensate)
    except Exception:  # noqa: BLE001 - an input this model does not take has no approximation to record
        return None
    diff = relative_difference(got, loose)
    return diff if math.isfinite(diff) else None


def _float64(pruned, reference, removal, applied, probe, compensate, folded) -> dict:
    from compress.slimming.float64_check import TOLERANCE, float64_check

    exact = float64_check(pruned, reference, removal, applied, probe, compensate=compensate, folded=folded)
    if "module" in exact:
        raise SelfCheckError(f"pruning would change {type(reference).__name__}'s output beyond float64 precision "
                             f"(max relative difference {exact['max_relative_difference']:.1e} > {TOLERANCE:g} "
                             f"with both networks in float64, where the first check in the model's dtype allows "
                             f"{tolerance_for(reference):g}); outputs first diverge at {exact['where']}; "
                             "the model is left unchanged", exact["module"])
    return exact
