"""BatchNorm subclasses that carry more than a BatchNorm: which ones pruning can shrink and keep whole.

timm's `BatchNormAct2d` is a BatchNorm2d whose forward also applies its activation (`act`) and drop
layer (`drop`); other libraries fuse other things the same way. Pruning keeps such a module's class and
its children: group pruning shrinks its per-channel tensors in place, and consumer-side selection
gathers channels in front of the module's own forward (compress.channel_select.selecting_class).

That is only right when the per-channel state is the BatchNorm's own (γ, β, running mean and variance)
and the children hold no state of their own: an activation or a dropout, applied channel by channel.
A subclass with more (a per-channel parameter of its own, a child with weights) is not pruned, and the
plan says why.
"""

from __future__ import annotations

from torch import nn

BN_STATE = frozenset({"weight", "bias", "running_mean", "running_var", "num_batches_tracked", "index"})


def supported_batchnorm(m: nn.Module) -> str | None:
    """None when pruning can shrink `m` and keep its behaviour; otherwise why not, as a plan reason."""
    cls = type(m).__name__
    own = [n for n, _ in m.named_parameters(recurse=False)] + [n for n, _ in m.named_buffers(recurse=False)]
    extra = sorted(set(own) - BN_STATE)
    if extra:
        return f"they pass {cls}, whose own state {', '.join(extra)} this code cannot shrink"
    for child_name, child in m.named_children():
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            return f"they pass {cls}, whose part {child_name} ({type(child).__name__}) has weights of its own"
    return None
