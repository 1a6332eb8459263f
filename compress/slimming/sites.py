"""Consumer-side selection sites, found on the trace (see compress.channel_select for what they are).

A BN is a site when (1) its output reaches exactly one convolution (groups 1) or linear layer through
single-input, channel-preserving ops; (2) the tensor it reads is not a layer's output made for it alone
(it comes from an addition or a concatenation, or its producer has other readers); and (3) its channels
are read elsewhere too: another BN or another consumer shares them. A BN that already selects (an
earlier pass) is always a site. A BN behind a depthwise convolution (MobileNet) fails (2): its channels
are produced for it alone, and removing them where they are produced saves more.
"""

from __future__ import annotations

from torch import nn

from compress.channel_select import SelectBatchNorm2d, SelectionSite
from compress.slimming.channels import CHANNELWISE, REDUCTIONS, RESHAPES, ChannelMap, Classes, Layer
from compress.slimming.fused import supported_batchnorm
from compress.slimming.trace import Node, Value


def _passes_channels(node: Node) -> bool:
    """A single-input op that keeps channel c as channel c (activations, pooling, flattening a 1×1 map)."""
    if len(node.inputs) != 1 or len(node.outputs) < 1:
        return False
    src, out = node.inputs[0], node.outputs[0]
    if src.channels is None or out.channels != src.channels:
        return False
    return node.op in CHANNELWISE or node.op in RESHAPES or node.op in REDUCTIONS


def _single_consumer(v: Value, features: int) -> Node | None:
    while len(v.readers) == 1:
        node = v.readers[0]
        if node.op == "layer":
            m = node.module
            if isinstance(m, nn.Conv2d) and m.groups == 1 and m.in_channels == features and node.inputs[0] is v:
                return node
            if isinstance(m, nn.Linear) and m.in_features == features and len(v.shape) == 2:
                return node
            return None
        if not _passes_channels(node):
            return None
        v = node.outputs[0]
    return None


def _reads_shared_tensor(v: Value) -> bool:
    node = v.producer
    while node is not None and len(v.readers) == 1 and node.op != "layer" and _passes_channels(node):
        v = node.inputs[0]
        node = v.producer
    produced_here = node is not None and node.op == "layer" and isinstance(
        node.module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
    return len(v.readers) > 1 or not produced_here


def _readers_by_class(cm: ChannelMap, cl: Classes) -> dict[int, set]:
    """class -> the BN layers and consumer layers whose slots lie in it."""
    found: dict[int, set] = {}
    for layer in cm.layers:
        sides = []
        if layer.kind == "bn":
            sides = [layer.out_value]
        elif layer.kind in ("conv", "linear", "grouped"):
            sides = [layer.in_value]
        for v in sides:
            for c in set(cl.of_value(v).tolist()):
                found.setdefault(c, set()).add(layer.module)
    return found


def find_sites(cm: ChannelMap, cl: Classes) -> list[SelectionSite]:
    """The selection sites of a channel map built without cuts, in trace order."""
    readers = _readers_by_class(cm, cl)
    layer_of = {layer.module: layer for layer in cm.layers}
    sites = []
    for layer in cm.layers:
        bn = layer.module
        if not isinstance(bn, nn.BatchNorm2d) or not bn.affine or supported_batchnorm(bn) is not None:
            continue
        if len(layer.node.inputs) != 1 or len(layer.node.outputs) != 1:
            continue
        consumer = _single_consumer(layer.out_value, bn.num_features)
        if consumer is None or layer_of.get(consumer.module) is None or layer_of[consumer.module].node is not consumer:
            continue
        if isinstance(bn, SelectBatchNorm2d) or (_reads_shared_tensor(layer.in_value)
                                                 and _shares_channels(cl, readers, layer, consumer.module)):
            sites.append(SelectionSite(layer.name, bn, consumer.scope, consumer.module))
    return sites


def _shares_channels(cl: Classes, readers: dict, layer: Layer, consumer: nn.Module) -> bool:
    for c in set(cl.of_value(layer.in_value).tolist()):
        if readers.get(c, set()) - {layer.module, consumer}:
            return True
    return False
