"""Which channels must be removed together, and which must stay: rules over a compress.slimming.trace.

Every channel of every recorded tensor is a slot. Ops that carry channel c of their input to channel c
of their output (activations, pooling, additions, BatchNorm, depthwise convolutions) join those slots;
a concatenation joins each input's slots to its range of the output; a split or a slice joins each part
to its range of the input. After all joins, a class is one channel as pruning sees it: removing it
removes every slot in it. Convolutions and linear layers make new classes at their outputs and read
classes at their inputs.

A slot is *frozen* where this code cannot vouch for what removing it would do: an op it does not know
(einsum, a reshape that mixes channels, a write into a view, ...), code that reads the channel count, a
tensor the model makes itself or a parameter used outside its layer, the model's input and outputs. A
class with a frozen slot is left alone, and the reason is kept for the plan.

Splits are honoured where their sizes can follow the pruning: `chunk` and equal splits keep equal
parts (a constraint on the decision), and split sizes that a module keeps as an attribute (timm's
MixedConv2d.splits, ultralytics' C2f.c) are rewritten after pruning (see compress.slimming.surgery).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from compress.slimming.trace import Node, Trace, Value

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


class UnionFind:
    """Joins collected as index arrays and resolved at once (vectorised: a network has 10^5 to 10^6 slots)."""

    def __init__(self, n: int):
        self.n = n
        self._a: list[np.ndarray] = []
        self._b: list[np.ndarray] = []

    def union(self, a, b) -> None:
        self._a.append(np.atleast_1d(np.asarray(a, dtype=np.int64)))
        self._b.append(np.atleast_1d(np.asarray(b, dtype=np.int64)))

    def union_ranges(self, a: int, b: int, n: int) -> None:
        if n > 0:
            self.union(np.arange(a, a + n), np.arange(b, b + n))

    def roots(self) -> np.ndarray:
        """Per slot, the smallest slot it is joined to (min-label hooking with pointer jumping)."""
        label = np.arange(self.n, dtype=np.int64)
        if not self._a:
            return label
        a, b = np.concatenate(self._a), np.concatenate(self._b)
        while True:
            la, lb = label[a], label[b]
            differ = la != lb
            if not differ.any():
                return label
            low = np.minimum(la, lb)[differ]
            np.minimum.at(label, la[differ], low)
            np.minimum.at(label, lb[differ], low)
            while True:
                jumped = label[label]
                if np.array_equal(jumped, label):
                    break
                label = jumped


@dataclass
class SplitPart:
    """A split along channels: the slots of each part in the input, and how its sizes can follow."""

    node: Node
    parts: list[range]  # slot offsets of each part in the input value
    equal: bool  # the code computes equal parts (chunk, or one size for all)
    owner: str | None = None  # module keeping the sizes, when they can be rewritten
    attribute: str | None = None


@dataclass
class Layer:
    """A layer's call in the trace, with the slot offsets of its input and output channels."""

    name: str
    module: nn.Module
    node: Node
    kind: str  # "conv", "depthwise", "grouped", "linear", "bn", "frozen"
    in_value: Value | None
    out_value: Value | None


@dataclass
class ChannelMap:
    trace: Trace
    offsets: dict[int, int]  # value id -> first slot
    size: int
    uf: UnionFind
    frozen: dict[int, str] = field(default_factory=dict)  # slot -> reason
    layers: list[Layer] = field(default_factory=list)
    splits: list[SplitPart] = field(default_factory=list)
    cuts: set = field(default_factory=set)  # BN modules whose input and output are not joined (selections)
    broadcast_nodes: set = field(default_factory=set)  # elementwise nodes with an operand broadcast over channels

    def slots(self, v: Value | None) -> range:
        if v is None or v.channels is None:
            return range(0)
        start = self.offsets[v.id]
        return range(start, start + v.channels)

    def freeze(self, v: Value | None, reason: str, only: range | None = None) -> None:
        for s in (only if only is not None else self.slots(v)):
            self.frozen.setdefault(s, reason)


def build(trace: Trace, cuts: set | None = None) -> ChannelMap:
    """Join the slots of `trace` by the rules above; BN modules in `cuts` do not join input to output."""
    offsets, total = {}, 0
    for v in trace.values:
        offsets[v.id] = total
        total += v.channels or 0
    cm = ChannelMap(trace, offsets, total, UnionFind(total), cuts=set(cuts or ()))
    for v in trace.values:
        if v.kind in ("param", "const"):
            what = f"parameter {v.name}" if v.name else "a tensor the model makes in its forward"
            cm.freeze(v, f"they meet {what}")
    for v in trace.inputs:
        cm.freeze(v, "the model's input")
    for v in trace.outputs:
        cm.freeze(v, "they are the model's output")
    for v, scope in trace.channel_reads:
        cm.freeze(v, f"code in {scope or 'the forward'} reads their channel count")
    first_call: dict[nn.Module, Layer] = {}
    for node in trace.nodes:
        if node.op == "layer":
            _layer(cm, node, first_call)
        else:
            _function(cm, node)
    return cm


# --- layers ------------------------------------------------------------------------------------------

def _layer(cm: ChannelMap, node: Node, first_call: dict) -> None:
    m = node.module
    name = node.scope
    v_in = node.inputs[0] if node.inputs else None
    v_out = node.outputs[0] if node.outputs else None
    kind = _layer_kind(m, v_in, v_out)
    if kind == "bn" and v_in.channels != v_out.channels and m not in cm.cuts:
        kind = "frozen"  # a selecting BN (an earlier pass) only prunes as a selection
    layer = Layer(name, m, node, kind, v_in, v_out)
    if kind == "frozen" or len(node.inputs) != 1 or len(node.outputs) != 1:
        why = _frozen_why(m)
        for v in [*node.inputs, *node.outputs]:
            cm.freeze(v, why)
        layer.kind = "frozen"
    elif kind in ("depthwise", "bn") and m not in cm.cuts:
        cm.uf.union_ranges(cm.offsets[v_in.id], cm.offsets[v_out.id], v_out.channels)
    elif kind == "grouped":
        _join_runs(cm, v_in, m.groups)
        _join_runs(cm, v_out, m.groups)
    earlier = first_call.get(m)
    if earlier is None:
        first_call[m] = layer
        cm.layers.append(layer)
    elif layer.kind != "frozen" and earlier.kind != "frozen":
        # The same weights applied again: both calls must lose the same channels.
        for a, b in ((earlier.in_value, v_in), (earlier.out_value, v_out)):
            cm.uf.union_ranges(cm.offsets[a.id], cm.offsets[b.id], a.channels)
    else:
        for v in (earlier.in_value, earlier.out_value, v_in, v_out):
            cm.freeze(v, f"{name} is applied more than once")


def _layer_kind(m: nn.Module, v_in: Value | None, v_out: Value | None) -> str:
    if v_in is None or v_out is None or v_in.channels is None or v_out.channels is None:
        return "frozen"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        from compress.slimming.fused import supported_batchnorm

        return "bn" if supported_batchnorm(m) is None and len(v_in.shape) >= 2 else "frozen"
    if isinstance(m, nn.modules.conv._ConvNd):
        if m.transposed or v_in.channels != m.in_channels or v_out.channels != m.out_channels:
            return "frozen"
        if m.groups == 1:
            return "conv"
        if m.groups == m.in_channels == m.out_channels:
            return "depthwise"
        return "grouped" if m.in_channels % m.groups == 0 and m.groups < m.in_channels else "frozen"
    if isinstance(m, nn.Linear):
        return "linear" if len(v_in.shape) == 2 and len(v_out.shape) == 2 else "frozen"
    return "frozen"


def _frozen_why(m: nn.Module) -> str:
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        from compress.slimming.fused import supported_batchnorm

        return supported_batchnorm(m) or f"they pass {type(m).__name__}, which this code does not prune"
    if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed and m.groups > 1:
        return f"they pass a grouped convolution ({type(m).__name__}, groups={m.groups}) with a channel multiplier"
    if isinstance(m, nn.Linear):
        return f"they pass a {type(m).__name__} applied over more than one axis (tokens, not channels)"
    return f"they pass {type(m).__name__}, which couples channels in a way this code does not prune"


def _join_runs(cm: ChannelMap, v: Value, groups: int) -> None:
    """A grouped convolution takes the same positions from each of its `groups` runs."""
    start, period = cm.offsets[v.id], v.channels // groups
    if groups > 1:
        cm.uf.union(np.tile(np.arange(start, start + period), groups - 1), np.arange(start + period, start + v.channels))


# --- functions ---------------------------------------------------------------------------------------

def _function(cm: ChannelMap, node: Node) -> None:
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


def _same(cm: ChannelMap, a: Value, b: Value) -> bool:
    if a.channels is None or b.channels is None or a.channels != b.channels:
        return False
    cm.uf.union_ranges(cm.offsets[a.id], cm.offsets[b.id], a.channels)
    return True


def _channelwise(cm: ChannelMap, node: Node) -> bool:
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


def _elementwise(cm: ChannelMap, node: Node) -> bool:
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


def _reduction(cm: ChannelMap, node: Node) -> bool:
    args, kwargs = _args(node)
    src = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    if not isinstance(src, Value) or len(src.shape) < 2 or isinstance(dim, Value):
        return False
    dims = _dims(dim, len(src.shape))
    if dims is None or 0 in dims or 1 in dims:
        return False
    return all(_same(cm, src, out) for out in node.outputs if len(out.shape) >= 2 and out.shape[0] == src.shape[0])


def _reshape(cm: ChannelMap, node: Node) -> bool:
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


def _permute(cm: ChannelMap, node: Node) -> bool:
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


def _cat(cm: ChannelMap, node: Node) -> bool:
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


def _split(cm: ChannelMap, node: Node) -> bool:
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


def _getitem(cm: ChannelMap, node: Node) -> bool:
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
    # those inside it too unless it runs to the end.
    keep = range(0, start) if stop >= src.channels else range(0, stop)
    base = cm.offsets[src.id]
    cm.freeze(src, f"a slice [{start}:{stop}] in {node.where} keeps fixed bounds",
              only=range(base + keep.start, base + keep.stop))
    return True


def _pad(cm: ChannelMap, node: Node) -> bool:
    args, kwargs = _args(node)
    src, pad = args[0], args[1] if len(args) > 1 else kwargs.get("pad")
    if not isinstance(src, Value) or pad is None or len(pad) > 2 * (len(src.shape) - 2):
        return False
    return _same(cm, src, node.outputs[0])


# --- classes -----------------------------------------------------------------------------------------

@dataclass
class Classes:
    """The result: a class per slot, and what is known of each class."""

    cmap: ChannelMap
    of: np.ndarray  # slot -> class id (the class's smallest slot)
    frozen: dict[int, str]  # class id -> reason

    def of_value(self, v: Value | None) -> np.ndarray:
        r = self.cmap.slots(v)
        return self.of[r.start:r.stop]


def classes(cm: ChannelMap) -> Classes:
    of = cm.uf.roots()
    frozen: dict[int, str] = {}
    for slot, reason in cm.frozen.items():
        frozen.setdefault(int(of[slot]), reason)
    return Classes(cm, of, frozen)
