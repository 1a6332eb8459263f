"""Shared by the pruning engine's tests: exactness against the unpruned network with removed channels zeroed."""

from __future__ import annotations

import copy

import torch

from compress import slimming


def outputs(out) -> list[torch.Tensor]:
    """Every tensor a forward returned (detectors return tuples, lists and dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in outputs(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out, key=str) for t in outputs(out[k])]
    return []


def relative(got, want) -> float:
    """Largest |difference| over the largest |reference| value, the worst over all returned tensors."""
    got, want = outputs(got), outputs(want)
    assert len(got) == len(want) and all(a.shape == b.shape for a, b in zip(got, want))
    return max(float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12) for a, b in zip(got, want))


def prune_exactly(model: torch.nn.Module, example: torch.Tensor, percent: float = 0.3, **kwargs):
    """Decide on a copy, give the removed channels γ = β = 0 in `model`, replay the plan on a copy of that.

    Returns (pruned, reference, plan, relative difference on a random batch). Removing channels whose
    γ and β are zero must not change the network at all."""
    _, plan = slimming.prune(copy.deepcopy(model), percent, example, **kwargs)
    slimming.zero_removed_channels(model, plan, example, beta=True)
    reference = copy.deepcopy(model).eval()
    pruned, _ = slimming.prune(model, percent, example, plan=plan)
    x = torch.randn(2, *example.shape[1:], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        rel = relative(pruned(x), reference(x))
    return pruned, reference, plan, rel


def run_without_loss(model, config, steps: int = 200, lr: float = 0.1, input_size=(3, 16, 16)):
    """SGD steps with zero gradients: only the sparsity penalty of `config` moves weights, so what it pulls
    is plain to see. Returns the regularizer (closed)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    reg = config.build(model, [lr] * steps, input_size=input_size)
    for _ in range(steps):
        opt.zero_grad()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        reg.step(opt)
        opt.step()
    reg.close()
    return reg
