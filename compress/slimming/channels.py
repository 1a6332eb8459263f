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

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from compress.slimming.ops import (CHANNELWISE, CREATION, ELEMENTWISE, PERMUTES, REDUCTIONS, RESHAPES,  # noqa: F401
                                   SPLITS, SplitPart, function_rule)
from compress.slimming.trace import Node, Trace, Value

# Single-input ops that map channel c to channel c (extra outputs, such as pooling indices, too).
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
            function_rule(cm, node)
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
