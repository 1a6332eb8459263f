"""Layers that run only for other inputs than the traced example: a branch on the input's values (bright
images take another head) or on its size (a block that runs only from 64 pixels up).

Pruning follows one eval forward, so such layers would keep their old widths: the pruned network passes
its self-check and then reads channels that moved, or fails, on the inputs that take them. Before pruning
the model runs on three more single images: brighter (+3), darker (−3), and 1.5 times larger in every
spatial dimension (rounded up to a multiple of 32 where the example's size is one). Weighted layers that
run there and not in the trace are refused in one line. Only the paths those inputs take are found: a
branch on something else (one class's score, one exact size) stays unseen, as it does for any tracer.
A forward that fails on one of them (a classifier that takes one size only) shows the layers it ran
until then, which are on the traced path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from compress.errors import CompressError
from compress.slimming.training_only import listed, modules_run, not_in_trace

# Elements of one image above which the larger input is not tried: a forward at 2.25 times an image that
# large would cost more memory than pruning itself.
LARGER_LIMIT = 16 * 1024 * 1024


def probe_inputs(example_input: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(what it is, one image) for each input that may take a path the example does not."""
    if not example_input.is_floating_point() or example_input.dim() < 3:
        return []
    gen = torch.Generator().manual_seed(1)
    one = (1, *example_input.shape[1:])
    base = torch.randn(one, generator=gen)
    probes = [("brighter images (+3)", base + 3), ("darker images (-3)", base - 3)]
    if math.prod(one) * 2.25 <= LARGER_LIMIT:
        sizes = [_larger(d) for d in example_input.shape[2:]]
        probes.append((f"a {'x'.join(map(str, sizes))} input", torch.randn((*one[:2], *sizes), generator=gen)))
    return [(label, x.to(example_input.device, example_input.dtype)) for label, x in probes]


def larger_input(example_input: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The 1.5 times larger one of `probe_inputs`, as a list: empty where it is not tried."""
    return probe_inputs(example_input)[2:]  # after the brighter and the darker image


def _larger(d: int) -> int:
    bigger = math.ceil(d * 1.5)
    return -(-bigger // 32) * 32 if d % 32 == 0 else bigger


def untraced_runs(model: nn.Module, example_input: torch.Tensor) -> tuple[set[str], dict[str, set[str]]]:
    """(the modules a training-mode forward of the example runs, {other input: the modules its eval forward
    runs}), with the model's state saved and put back once for all of them."""
    probes = probe_inputs(example_input)
    in_training, *others = modules_run(model, [(example_input, True)] + [(x, False) for _, x in probes])
    return in_training, {label: ran for (label, _), ran in zip(probes, others)}


def refuse_other_paths(model: nn.Module, elsewhere: dict[str, set[str]] | None, eval_scopes) -> None:
    """CompressError naming the weighted layers an input in `elsewhere` ran and the eval trace did not."""
    for label, ran in (elsewhere or {}).items():
        found = not_in_trace(model, ran, eval_scopes)
        if found:
            raise CompressError(f"{type(model).__name__} runs {listed(found)} for {label} but not for the example "
                                "input: pruning follows one forward, so those layers would keep their old widths "
                                "and the pruned network would be wrong there; a network whose layers depend on its "
                                "input this way cannot be pruned by tracing")
