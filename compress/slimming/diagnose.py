"""Where a pruned network goes wrong: run only after the self-check failed, so its cost is no one's burden.

`first_divergence` runs the silenced reference and the pruned network once more with a forward hook on
every module, and walks the reference's modules in the order they ran: the first whose output differs
(on the channels the pruned module still has) is the one named. `failing_module` names the innermost
module running when the pruned network's forward raised.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.slimming.compensate import restore, silence
from compress.slimming.reference import relative_difference, replacement_hooks


def failing_module(model: nn.Module, probe: torch.Tensor) -> tuple[str | None, str]:
    """(name, "name (Class)") of the innermost module running when the forward raised."""
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def leave(_mod, _args, _out):
        stack.pop()  # returns None: a forward hook's return value would replace the output

    for m in model.modules():
        hooks.append(m.register_forward_pre_hook(lambda mod, _a: stack.append(names[mod])))
        hooks.append(m.register_forward_hook(leave))
    try:
        with torch.no_grad():
            model(probe)
    except Exception:
        pass
    finally:
        for h in hooks:
            h.remove()
    name = next((n for n in reversed(stack) if n), None)
    return name, f"{name} ({type(model.get_submodule(name)).__name__})" if name else "its top-level forward"


def _record(model: nn.Module) -> tuple[list, dict]:
    order, outs = [], {}
    names = {m: n for n, m in model.named_modules()}

    def hook(mod, _args, out):
        name = names[mod]
        if name not in outs and isinstance(out, torch.Tensor):
            outs[name] = out.detach()
            order.append(name)

    return [m.register_forward_hook(hook) for m in model.modules()], (order, outs)


def _kept_channels(name: str, removal, n: int) -> list[int] | None:
    gone = removal.out.get(name) or removal.bn.get(name)
    if name in removal.selections:
        return removal.selections[name]
    if gone:
        return sorted(set(range(n)) - set(gone))
    return None


@torch.no_grad()
def first_divergence(pruned: nn.Module, reference: nn.Module, removal, deltas: dict, probe: torch.Tensor, *,
                     compensate: bool, tol: float, folded: dict | None = None) -> tuple[str | None, str]:
    """(name, "name (Class)") of the first module, in the reference's order, whose output differs."""
    saved = silence(reference, removal.bn, beta=not compensate, raw=removal.raw)
    # The replacement first: forward hooks run in the order they were registered, and a recorder ahead
    # of it kept each consumer's output without the constant folded into its bias, so the first such
    # consumer was named however right it was.
    replace = replacement_hooks(reference, removal, deltas, 0, folded)
    hooks, (order, ref_out) = _record(reference)
    try:
        reference(probe)
    finally:
        for h in hooks + replace:
            h.remove()
        restore(saved)
    hooks, (_, got_out) = _record(pruned)
    try:
        pruned(probe)
    finally:
        for h in hooks:
            h.remove()
    for name in order:
        want, got = ref_out[name], got_out.get(name)
        if got is None:
            continue
        if got.shape != want.shape and want.dim() >= 2:
            kept = _kept_channels(name, removal, want.shape[1])
            if kept is None or len(kept) != got.shape[1]:
                continue
            want = want[:, torch.as_tensor(kept, device=want.device)]
        if relative_difference([got], [want]) > tol:
            return name or None, f"{name or 'the top level'} ({type(reference.get_submodule(name)).__name__})"
    return None, "no single module (only the final outputs differ)"
