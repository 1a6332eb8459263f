"""What the pruned network should compute: the unpruned reference with the removed channels silenced and,
at every layer that reads them, those inputs replaced by the constant compensation folded in (see
compress.slimming.selfcheck, which compares against it, and compress.slimming.diagnose, which finds where a
failing pruning first diverges from it)."""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import CompressError
from compress.slimming.compensate import restore, silence


def flatten_outputs(out) -> list[torch.Tensor]:
    """Every tensor a model returns, in a fixed order. Anything else but None is refused: a value the
    check cannot compare (a dataclass of logits) would pass it unseen, and the trace would not know those
    channels as the model's output."""
    if isinstance(out, torch.Tensor):
        return [out]
    if out is None:
        return []
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out, key=str) for t in flatten_outputs(out[k])]
    raise CompressError(f"the model's outputs hold an object of type {type(out).__name__}; pruning checks tensors "
                        "and lists, tuples and dicts of them, so it cannot vouch for this one")


def replacement_hooks(reference: nn.Module, removal, deltas: dict, start: int, folded: dict | None = None) -> list:
    """At each consumer: removed inputs become zero, the folded constant is added (batch rows >= start)
    after the consumer at each of its calls: what the removal should compute. The diagnosis, which compares
    each module's own output with the pruned network's, passes `folded` (compress.slimming.compensate.fold_deltas)
    to add it where the pruned network holds it: at the input of the BN whose running mean took it."""
    modules = dict(reference.named_modules())
    hooks = []
    for name, idx in removal.inputs.items():
        mod = modules[name]

        def pre(m, args, idx=idx, name=name):
            x = args[0].clone()
            if x.dim() < 2:
                raise CompressError(f"{name} receives a tensor of shape {list(x.shape)}, with no batch dimension, "
                                    "when the model runs on one image (a squeeze() that drops the batch?): the "
                                    "self-check runs single images; use flatten(1) or squeeze(-1)")
            x[start:, torch.as_tensor(idx, device=x.device)] = 0
            return (x, *args[1:])

        hooks.append(mod.register_forward_pre_hook(pre))
        if name not in deltas:
            continue
        into = (folded or {}).get(name, "bias")
        if into == "bias":
            hooks.append(mod.register_forward_hook(lambda m, args, out, d=deltas[name]: _added(out, d, start)))
        else:
            hooks.append(modules[into].register_forward_pre_hook(
                lambda m, args, d=deltas[name]: (_added(args[0], d, start), *args[1:])))
    return hooks


def _added(x: torch.Tensor, delta: torch.Tensor, start: int) -> torch.Tensor:
    x = x.clone()
    x[start:] += delta.to(x).view((1, -1) + (1,) * (x.dim() - 2))
    return x


@torch.no_grad()
def reference_outputs(reference: nn.Module, removal, deltas: dict, probe: torch.Tensor, *, compensate: bool,
                      loose: bool = True, shapes: list | None = None):
    """(silenced unpruned outputs or None, silenced-and-replaced outputs, forwards run); without `loose`
    only the replaced outputs are computed (None, outputs, 1). `shapes`, the output shapes of one forward
    of `probe` (the pruned network's), tell a batch-first output from one whose first dimension only
    happens to be twice the probe's batch (torch.stack of two heads on a batch of one)."""
    n = probe.shape[0]
    saved = silence(reference, removal.bn, beta=not compensate, raw=removal.raw)
    try:
        forwards = 1
        if loose:
            hooks = replacement_hooks(reference, removal, deltas, n)
            try:
                both = flatten_outputs(reference(torch.cat([probe, probe])))
            finally:
                for h in hooks:
                    h.remove()
            if all(t.dim() and t.shape[0] == 2 * n for t in both) and _batch_first(both, shapes, n):
                return [t[:n] for t in both], [t[n:] for t in both], 1
            forwards = 2  # outputs not batch-first: the replaced ones alone, in a forward of their own
        hooks = replacement_hooks(reference, removal, deltas, 0)
        try:
            return None, flatten_outputs(reference(probe)), forwards
        finally:
            for h in hooks:
                h.remove()
    finally:
        restore(saved)


@torch.no_grad()
def silenced_outputs(reference: nn.Module, removal, x: torch.Tensor, *, compensate: bool) -> list[torch.Tensor]:
    """The unpruned network's outputs on `x` with the removed channels silenced (γ, and β without
    compensation), nothing replaced: what `approximation` compares the pruned network with."""
    saved = silence(reference, removal.bn, beta=not compensate, raw=removal.raw)
    try:
        return flatten_outputs(reference(x))
    finally:
        restore(saved)


def _batch_first(both: list[torch.Tensor], shapes: list | None, n: int) -> bool:
    if shapes is None:
        return True
    return len(shapes) == len(both) and all(
        tuple(s) == (n, *t.shape[1:]) for s, t in zip(shapes, both))


def relative_difference(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
        return float("inf")
    worst = 0.0
    for a, b in zip(got, want):
        if not a.numel():
            continue
        a, b = a.to("cpu", torch.float64), b.to("cpu", torch.float64)  # a device may lack float64
        finite = torch.isfinite(b)
        # Non-finite values (a -inf logit mask, log(0)) must sit where the reference has them, equal to
        # them; the rest is compared on the finite values alone, since an infinite scale would pass anything.
        if not torch.equal(torch.isfinite(a), finite):
            return float("inf")
        if not bool(finite.all()):
            odd_a, odd_b = a[~finite], b[~finite]
            if not bool(((odd_a == odd_b) | (torch.isnan(odd_a) & torch.isnan(odd_b))).all()):
                return float("inf")
            if not bool(finite.any()):
                continue
            a, b = a[finite], b[finite]
        scale = max(float(b.abs().max()), 1e-12)
        worst = max(worst, float((a - b).abs().max()) / scale)
    return worst
