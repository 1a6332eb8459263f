"""The rules for function calls: which channels an op carries through, joins, splits, or must leave alone.

An op not listed here is unknown: every channel it reads or makes is frozen, with the op and the module
that called it as the reason. The lists are deliberately short: an op is listed only where what it does
to channel c is certain from its name and arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from compress.slimming.trace import Node, Value

# Single-input ops that map channel c to channel c (extra outputs, such as pooling indices, too).
CHANNELWISE = frozenset("""
relu relu6 leaky_relu hardtanh elu selu celu gelu silu mish sigmoid tanh hardsigmoid hardswish softplus
softsign logsigmoid threshold dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
clamp clip clamp_min clamp_max abs neg exp sqrt rsqrt square reciprocal contiguous clone float half double
bfloat16 to type type_as detach max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
adaptive_max_pool3d max_pool2d_with_indices lp_pool2d interpolate upsample upsample_nearest upsample_bilinear
erf log log1p sin cos hardshrink softshrink tanhshrink positive nan_to_num
""".split())
_DTYPE_ONLY = frozenset({"to", "type", "type_as"})  # another tensor only lends its dtype or device
ELEMENTWISE = frozenset("add sub mul div truediv floordiv pow maximum minimum fmax fmin where lerp addcmul "
                        "addcdiv rsub remainder fmod atan2 hypot".split())
REDUCTIONS = frozenset("mean sum amax amin std var logsumexp nansum nanmean prod".split())
RESHAPES = frozenset("view reshape flatten squeeze unsqueeze expand expand_as view_as reshape_as unflatten".split())
PERMUTES = frozenset("permute transpose swapaxes movedim".split())
SPLITS = frozenset("split chunk split_with_sizes tensor_split".split())
# Ops that make a new tensor, taking at most a shape, dtype or device from their arguments.
CREATION = frozenset("""arange zeros ones empty full new_full new_zeros new_ones new_empty zeros_like ones_like
empty_like full_like rand randn rand_like randn_like linspace meshgrid tensor as_tensor eye""".split())


@dataclass
class SplitPart:
    """A split along channels: the slots of each part in the input, and how its sizes can follow."""

    node: Node
    parts: list[range]  # slot offsets of each part in the input value
    equal: bool  # the code computes equal parts (chunk, or one size for all)
    owner: str | None = None  # module keeping the sizes, when they can be rewritten
    attribute: str | None = None


def function_rule(cm, node: Node) -> None:
    """Join or freeze the slots a function call touches (cm: a compress.slimming.channels.ChannelMap)."""
    op = node.op
    if op == "write_into_view" and not node.outputs[0].readers:
        return  # the viewed tensor is not read after the write: nothing observes it
    handled = False
    try:
        if op in CHANNELWISE and len(node.inputs) > 1 and op not in _DTYPE_ONLY:
            handled = _elementwise(cm, node)  # clamp(x, min=tensor): the bounds are operands too
        elif op in CHANNELWISE:
            handled = _channelwise(cm, node)
        elif op in ELEMENTWISE or op in ("max", "min") and _binary(node):
            handled = _elementwise(cm, node)
        elif op in REDUCTIONS or op in ("max", "min"):
            handled = _reduction(cm, node)
        elif op in RESHAPES:
            handled = _reshape(cm, node)
        elif op in PERMUTES:
            handled = _permute(cm, node)
        elif op in ("cat", "concat", "concatenate", "stack"):
            handled = _cat(cm, node)
        elif op in SPLITS or op == "unbind":
            handled = _split(cm, node)
        elif op == "getitem":
            handled = _getitem(cm, node)
        elif op == "pad":
            handled = _pad(cm, node)
        elif op in CREATION:
            for v in node.outputs:
                cm.freeze(v, f"they meet a tensor the model makes in {node.where}")
            return
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError):
        handled = False  # arguments of a form the rules do not read: treat the op as unknown
    if not handled:
        reason = f"they reach {op} in {node.where}"
        for v in [*node.inputs, *node.outputs]:
            cm.freeze(v, reason)


def _args(node: Node):
    args, kwargs = node.spec
    return list(args), dict(kwargs)


def _same(cm, a: Value, b: Value) -> bool:
    if a.channels is None or b.channels is None or a.channels != b.channels:
        return False
    cm.uf.union_ranges(cm.offsets[a.id], cm.offsets[b.id], a.channels)
    return True


def _channelwise(cm, node: Node) -> bool:
    args, _ = _args(node)
    src = args[0] if args and isinstance(args[0], Value) else None
    if src is None:
        return False
    if len(src.shape) < 2:
        return all(len(out.shape) < 2 for out in node.outputs)
    return all(_same(cm, src, out) for out in node.outputs if len(out.shape) >= 2)


def _binary(node: Node) -> bool:
    args, kwargs = _args(node)
    return sum(isinstance(a, Value) for a in [*args, *kwargs.values()]) >= 2


def _elementwise(cm, node: Node) -> bool:
    out = node.outputs[0]
    if out.channels is None or len(out.shape) < 2:
        return all(v.channels is None or len(v.shape) < 2 for v in node.inputs)
    for v in node.inputs:
        lag = len(out.shape) - len(v.shape)
        pos = 1 - lag
        if pos < 0 or v.shape[pos] == 1 and out.channels != 1:
            cm.broadcast_nodes.add(node)  # broadcast over channels: no join
            continue
        if lag != 0 or v.shape[pos] != out.channels:
            return False
        _same(cm, v, out)
    for extra in node.outputs[1:]:
        if not _same(cm, out, extra):
            return False
    return True


def _dims(spec_dim, ndim: int) -> list[int] | None:
    if spec_dim is None:
        return None
    dims = list(spec_dim) if isinstance(spec_dim, (list, tuple)) else [spec_dim]
    return [d % ndim for d in dims]


def _reduction(cm, node: Node) -> bool:
    args, kwargs = _args(node)
    src = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if not isinstance(src, Value) or len(src.shape) < 2 or isinstance(dim, Value):
        return False
    dims = _dims(dim, len(src.shape))
    if dims is None or 0 in dims or 1 in dims:
        return False
    return all(_same(cm, src, out) for out in node.outputs if len(out.shape) >= 2 and out.shape[0] == src.shape[0])


def _reshape(cm, node: Node) -> bool:
    src, out = node.inputs[0] if node.inputs else None, node.outputs[0]
    if src is None or len(src.shape) < 2 or len(out.shape) < 2 or out.shape[0] != src.shape[0]:
        return False
    if out.shape[1] == src.shape[1]:
        per_in, per_out = math.prod(src.shape[2:]), math.prod(out.shape[2:])
        # A view keeps channel c's elements in channel c only if each channel keeps its element count;
        # an expand repeats them within the channel.
        return (per_in == per_out or node.op in ("expand", "expand_as")) and _same(cm, src, out)
    inner = math.prod(src.shape[2:])
    if len(out.shape) == 2 and out.shape[1] == src.shape[1] * inner:
        # Flattening (N, C, H, W) to (N, C·H·W): channel c becomes features c·H·W ... (c+1)·H·W - 1.
        a, b = cm.offsets[src.id], cm.offsets[out.id]
        cm.uf.union(np.repeat(np.arange(a, a + src.shape[1]), inner), np.arange(b, b + src.shape[1] * inner))
        return True
    return False


def _permute(cm, node: Node) -> bool:
    args, kwargs = _args(node)
    src, out = args[0], node.outputs[0]
    if not isinstance(src, Value) or len(src.shape) < 2:
        return False
    if node.op == "permute":
        order = args[1:] if len(args) > 2 or not isinstance(args[1], (list, tuple)) else args[1]
        order = [d % len(src.shape) for d in (order or kwargs.get("dims"))]
        keeps = order[:2] == [0, 1]
    else:
        pair = {d % len(src.shape) for d in args[1:3]}
        keeps = not pair & {0, 1}
    return keeps and _same(cm, src, out)


def _cat(cm, node: Node) -> bool:
    args, kwargs = _args(node)
    parts = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    out = node.outputs[0]
    if not parts or not all(isinstance(p, Value) for p in parts) or len(out.shape) < 2:
        return False
    ndim = len(parts[0].shape)
    if node.op == "stack":
        return dim % (ndim + 1) >= 2 and all(_same(cm, p, out) for p in parts)
    dim = dim % ndim
    if dim == 0:
        return False
    if dim != 1:
        return all(_same(cm, p, out) for p in parts)
    at = cm.offsets[out.id]
    for p in parts:
        cm.uf.union_ranges(cm.offsets[p.id], at, p.channels)
        at += p.channels
    return at == cm.offsets[out.id] + out.channels


def _split(cm, node: Node) -> bool:
    args, kwargs = _args(node)
    src = args[0]
    if not isinstance(src, Value) or len(src.shape) < 2:
        return False
    dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
    dim = dim % len(src.shape)
    outs = node.outputs
    if dim == 0:
        return False
    if dim != 1:
        return node.op != "unbind" and all(_same(cm, src, out) for out in outs)
    if node.op in ("unbind", "tensor_split"):
        return False
    sizes = [o.channels for o in outs]
    parts, at = [], 0
    for o in outs:
        cm.uf.union_ranges(cm.offsets[src.id] + at, cm.offsets[o.id], o.channels)
        parts.append(range(at, at + o.channels))
        at += o.channels
    if at != src.channels:
        return False
    how = args[1] if len(args) > 1 else kwargs.get("split_size_or_sections", kwargs.get("chunks"))
    # Parts stay equal when the code computes them so (chunk, one size for all); sizes given as a list
    # can follow the pruning part by part (compress.slimming.splits).
    equal = node.op == "chunk" or isinstance(how, int)
    cm.splits.append(SplitPart(node, parts, equal and len(set(sizes)) == 1))
    return True


def _getitem(cm, node: Node) -> bool:
    args, _ = _args(node)
    src, index, out = args[0], args[1], node.outputs[0]
    if not isinstance(src, Value) or len(src.shape) < 2:
        return False
    items = list(index) if isinstance(index, tuple) else [index]
    if any(isinstance(i, (Value, list)) or i is None for i in items[:2]) or any(isinstance(i, Value) for i in items):
        return False
    if items and items[0] is Ellipsis:
        return len(items) - 1 <= len(src.shape) - 2 and None not in items and _same(cm, src, out)
    if not items or not isinstance(items[0], slice) or items[0] != slice(None):
        return False
    second = items[1] if len(items) > 1 else slice(None)
    if second is Ellipsis or second == slice(None):
        return out.channels == src.channels and _same(cm, src, out)
    if not isinstance(second, slice):
        return False
    start, stop, step = second.indices(src.channels)
    picked = range(start, stop, step)
    if len(picked) != out.channels or step != 1:
        return False
    cm.uf.union_ranges(cm.offsets[src.id] + start, cm.offsets[out.id], out.channels)
    # The code slices with the same numbers after pruning: the channels before the slice must stay, and
    # those inside it too unless it runs to the end. A bound that counts from the end ([-6:]) moves with
    # every channel removed anywhere, so all of them stay.
    keep = range(0, start) if stop >= src.channels else range(0, stop)
    reason = f"a slice [{start}:{stop}] in {node.where} keeps fixed bounds"
    if any(isinstance(b, int) and b < 0 for b in (second.start, second.stop)):
        keep = range(0, src.channels)
        written = ":".join("" if b is None else str(b) for b in (second.start, second.stop))
        reason = f"a slice [{written}] in {node.where} counts from the end"
    base = cm.offsets[src.id]
    cm.freeze(src, reason, only=range(base + keep.start, base + keep.stop))
    return True


def _pad(cm, node: Node) -> bool:
    args, kwargs = _args(node)
    src, pad = args[0], args[1] if len(args) > 1 else kwargs.get("pad")
    if not isinstance(src, Value) or pad is None or len(pad) > 2 * (len(src.shape) - 2):
        return False
    return _same(cm, src, node.outputs[0])
