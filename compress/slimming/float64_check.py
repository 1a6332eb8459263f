"""The self-check's second look, in float64: the pruned network must equal its reference to float64 precision.

The first look (compress.slimming.selfcheck) compares in the model's own dtype, so it must allow float32
rounding, 1e-4 of each output tensor's largest value. A tensor holding values of very different sizes
(boxes in pixels beside class scores near zero) is then checked loosely on its small values. Here both
networks run again as float64 copies. The reference takes the constants exactly as the pruned network
holds them: each folded bias or BN running mean, less its value before folding. The two then compute the
same function on the same numbers, and any change beyond `TOLERANCE` is a changed function, whatever its
size beside the tensor's largest value.

What the folds hold is first held to what compensation measured, within the folded parameter's own
rounding, so a wrong constant cannot hide in the reference.

It runs only where it can be exact. A device without float64, no memory for the copies, complex
tensors, a model whose deep copy shares its tensors, or one that computes in a lower precision inside (a
cast to float32) leaves it unrun, and the check's record says why; the first look still stands.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from compress.errors import first_line
from compress.limits import TooLargeError, check_allocation
from compress.slimming.reference import flatten_outputs, reference_outputs, relative_difference

TOLERANCE = 1e-10  # of each output tensor's largest value; float64 re-association leaves about 1e-15


def applied_deltas(model: nn.Module, before: nn.Module, folded: dict[str, str]) -> dict[str, torch.Tensor]:
    """What each fold changed, as a constant added after its consumer: the bias now less the bias before
    (none counts as zero), or the BN's running mean before less now; in float64 on the CPU, since not
    every device has float64."""
    now, was = dict(model.named_modules()), dict(before.named_modules())
    out = {}
    for name, into in folded.items():
        if into == "bias":
            b = _cpu64(now[name].bias)
            old = was[name].bias
            out[name] = b - (_cpu64(old) if old is not None else torch.zeros_like(b))
        else:
            out[name] = _cpu64(was[into].running_mean) - _cpu64(now[into].running_mean)
    return out


def _cpu64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float64)


def mismatched_fold(applied: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor],
                    before: nn.Module, folded: dict[str, str]) -> str | None:
    """The first consumer whose folded constant is not the measured one within the rounding of the
    parameter that holds it, or None."""
    was = dict(before.named_modules())
    for name, into in folded.items():
        want = _cpu64(deltas[name])
        held = was[name].bias if into == "bias" else was[into].running_mean
        base = _cpu64(held).abs() if held is not None else torch.zeros_like(want)
        # A bias that folding created takes the layer's weight dtype (compress.slimming.compensate).
        eps = torch.finfo(held.dtype if held is not None else was[name].weight.dtype).eps
        if not bool(((applied[name] - want).abs() <= 2 * eps * (base + want.abs()) + 1e-30).all()):
            return name
    return None


class _LowerPrecision(TorchFunctionMode):
    """Notes the first operation that turns float64 inputs into a lower-precision float result."""

    def __init__(self):
        super().__init__()
        self.found: str | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.found is None and _any64((args, kwargs)) and _lower(out):
            self.found = getattr(func, "__name__", repr(func))
        return out


def _any64(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.dtype == torch.float64
    if isinstance(obj, (list, tuple)):
        return any(_any64(o) for o in obj)
    if isinstance(obj, dict):
        return any(_any64(o) for o in obj.values())
    return False


def _lower(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.is_floating_point() and obj.dtype != torch.float64
    if isinstance(obj, (list, tuple)):
        return any(_lower(o) for o in obj)
    return False


@contextlib.contextmanager
def float64_defaults():
    """Float64 as the default dtype (tensors a forward makes itself), no autograd, and a watch for
    lower-precision results; the default dtype is process-wide, so it is put back whatever happens."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    watch = _LowerPrecision()
    try:
        with torch.no_grad(), watch:
            yield watch
    finally:
        torch.set_default_dtype(saved)


def float64_forward(model: nn.Module, run):
    """run() under float64 defaults: (outputs, why they are not exact, or None)."""
    with float64_defaults() as watch:
        out = run()
    if watch.found is None and any(t.is_floating_point() and t.dtype != torch.float64 for t in out):
        watch.found = "its outputs"
    return out, (f"{type(model).__name__} computes in a lower precision inside ({watch.found})"
                 if watch.found else None)


class NotExact(Exception):
    """Why this model cannot be checked in float64 (a reason, not a fault)."""


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy that shares nothing with `model`: converting a shared tensor would change the
    caller's network. On the CPU its size is checked first, since running out of memory there is the
    kernel's OOM killer rather than an exception."""
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.numel()]
    if any(t.is_complex() for t in tensors):
        raise NotExact(f"{type(model).__name__} holds complex tensors")
    if all(t.device.type == "cpu" for t in tensors):
        # The float64 copy, and the float32 deep copy it is converted from.
        check_allocation(sum(t.numel() for t in tensors if t.is_floating_point()) * 3 // 2,
                         "float64", "the self-check's float64 copy")
    own = {t.untyped_storage().data_ptr() for t in tensors}
    dup = copy.deepcopy(model)
    if any(t.numel() and t.untyped_storage().data_ptr() in own for t in (*dup.parameters(), *dup.buffers())):
        raise NotExact(f"{type(model).__name__} shares tensors with its deep copy, so a float64 copy would "
                        "change it")
    return dup.to(torch.float64)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc)}"[:200]


def float64_check(pruned: nn.Module, reference: nn.Module, removal, applied: dict, probe: torch.Tensor, *,
                  compensate: bool, folded: dict | None = None) -> dict:
    """{"max_relative_difference", "tolerance"}, or {"not_run": why}; with `module` and `where`
    set when the difference exceeds the tolerance (the caller raises). One float64 copy is alive at a
    time, except while a failure is diagnosed."""
    x = probe.to(torch.float64) if probe.is_floating_point() else probe
    try:
        want, why = _reference_outputs64(reference, removal, applied, x, compensate)
        if why is None:
            got64 = float64_copy(pruned)
            got, why = float64_forward(pruned, lambda: flatten_outputs(got64(x)))
    except (NotExact, TooLargeError) as exc:
        return {"not_run": str(exc)}
    except Exception as exc:  # only that float64 cannot run here: the first look has passed
        return {"not_run": _first_line(exc)}
    if why is not None:
        return {"not_run": why}
    diff = relative_difference(got, want)
    record = {"max_relative_difference": diff, "tolerance": TOLERANCE}
    if not diff <= TOLERANCE:
        record["module"], record["where"] = _diagnose(got64, reference, removal, applied, x, compensate, folded)
    return record


def _reference_outputs64(reference, removal, applied, x, compensate):
    """The silenced-and-replaced reference in float64; its copy is freed on return."""
    ref64 = float64_copy(reference)
    return float64_forward(reference, lambda: reference_outputs(ref64, removal, applied, x, compensate=compensate,
                                                                 loose=False)[1])


def _diagnose(got64, reference, removal, applied, x, compensate, folded) -> tuple[str | None, str]:
    """The first diverging module, found in float64 as the comparison was; a diagnosis that cannot run
    names none (the engine then refuses rather than guess which units to leave)."""
    from compress.slimming.diagnose import first_divergence

    try:
        ref64 = float64_copy(reference)
        with float64_defaults():
            return first_divergence(got64, ref64, removal, applied, x, compensate=compensate, tol=TOLERANCE,
                                    folded=folded)
    except Exception as exc:
        return None, f"a module it could not name (the float64 diagnosis failed: {_first_line(exc)})"
