"""Consumer-side channel selection: prune a BN that reads a shared tensor for its own branch only.

In a pre-activation ResNet every block's first BN reads the residual stream, and in a DenseNet every
BN reads the concatenation of earlier features. Those channels are shared with other readers, so they
cannot be removed where they are produced. Network slimming (Liu et al., 2017) instead drops them for
one consumer: the BN sees only the channels it keeps. Here that is `SelectBatchNorm2d`, a BatchNorm2d
that first gathers its kept input channels (constant indices; ONNX `Gather`), followed by a
correspondingly narrower consumer convolution or linear layer.

Gathering before the BN instead of after it (where the official code puts its selection layer) is
equivalent, since BN acts per channel, and stores γ, β and statistics for the kept channels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from compress.errors import CompressError

WIDTH_TYPE = "SelectBatchNorm2d"

# Single-input ops that map channel c to channel c, through which a BN's output may reach its consumer.
_CHANNELWISE_GRAD_FNS = ("relu", "relu6", "hardtanh", "leakyrelu", "elu", "gelu", "silu", "sigmoid",
                         "hardswish", "avgpool2d", "maxpool2d", "adaptiveavgpool2d", "adaptivemaxpool2d",
                         "clone", "dropout", "mish",
                         # a global average pool (AdaptiveAvgPool2d(1), x.mean((2, 3))) traces as a mean; the
                         # consumer's width check in _single_consumer refuses a mean that changed the channels
                         "mean")


class SelectBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the input channels listed in the `index` buffer (a gather, then a BN)."""

    def __init__(self, num_features: int, in_channels: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, index: Sequence[int] | None = None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.in_channels = int(in_channels)
        index = torch.arange(num_features) if index is None else torch.as_tensor(list(index), dtype=torch.long)
        _check_index(index, num_features, self.in_channels)
        self.register_buffer("index", index.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.index_select(1, self.index))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, " + super().extra_repr()


def _check_index(index: torch.Tensor, num_features: int, in_channels: int) -> None:
    if index.dim() != 1 or index.numel() != num_features:
        raise CompressError(f"a channel selection of {num_features} features needs {num_features} indices, "
                            f"got {tuple(index.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= in_channels):
        raise CompressError(f"channel selection indices must lie in [0, {in_channels}), "
                            f"got {int(index.min())}..{int(index.max())}")
    if index.numel() != torch.unique(index).numel():
        raise CompressError("channel selection indices must not repeat")


# --- model.json widths ------------------------------------------------------------------------------

def width_spec(m: SelectBatchNorm2d) -> dict:
    return {"type": WIDTH_TYPE, "num_features": m.num_features, "in_channels": m.in_channels,
            "selected": [int(i) for i in m.index]}


def from_width_spec(old: nn.BatchNorm2d, spec: dict) -> SelectBatchNorm2d:
    """The selecting BN that `spec` describes, with `old`'s settings (its weights come from the state dict)."""
    try:
        n, c = int(spec["num_features"]), int(spec["in_channels"])
        selected = [int(i) for i in spec.get("selected", range(n))]
    except (KeyError, TypeError, ValueError) as exc:
        raise CompressError(f"{WIDTH_TYPE} width entry is malformed: {exc}") from None
    return SelectBatchNorm2d(n, c, old.eps, old.momentum, old.affine, old.track_running_stats, index=selected)


# --- finding and applying selections ----------------------------------------------------------------

@dataclass
class SelectionSite:
    """A BN whose channels can be dropped for its own consumer alone."""

    bn_name: str
    bn: nn.BatchNorm2d
    consumer_name: str
    consumer: nn.Module  # Conv2d (groups=1) or Linear reading the BN's channels one to one

    @property
    def in_channels(self) -> int:
        return self.bn.in_channels if isinstance(self.bn, SelectBatchNorm2d) else self.bn.num_features

    def selected(self) -> list[int]:
        """Indices, in the shared input tensor, of the channels this BN reads now."""
        if isinstance(self.bn, SelectBatchNorm2d):
            return [int(i) for i in self.bn.index]
        return list(range(self.bn.num_features))


def tp_pruner():
    """torch-pruning handler for SelectBatchNorm2d: inputs and outputs are not coupled one to one."""
    import torch_pruning as tp

    class SelectBatchNormPruner(tp.pruner.function.BasePruningFunc):
        TARGET_MODULES = (SelectBatchNorm2d,)

        def prune_out_channels(self, layer, idxs):
            keep = sorted(set(range(layer.num_features)) - {int(i) for i in idxs})
            _shrink(layer, keep)
            return layer

        def prune_in_channels(self, layer, idxs):
            # Removing shared input channels renumbers the selection; a selected one cannot go this way.
            gone = {int(i) for i in idxs}
            if gone & {int(i) for i in layer.index}:
                raise CompressError("cannot remove input channels that a channel selection still reads")
            remaining = [i for i in range(layer.in_channels) if i not in gone]
            renumber = {old: new for new, old in enumerate(remaining)}
            layer.index = torch.tensor([renumber[int(i)] for i in layer.index], dtype=torch.long,
                                       device=layer.index.device)
            layer.in_channels = len(remaining)
            return layer

        def get_out_channels(self, layer):
            return layer.num_features

        def get_in_channels(self, layer):
            return layer.in_channels

    return SelectBatchNormPruner()


def find_sites(model: nn.Module, graph) -> list[SelectionSite]:
    """BNs of `model` that read a shared tensor and feed a single consumer, in module order.

    `graph` is torch-pruning's DependencyGraph of `model`. A BN qualifies when (1) its output reaches
    exactly one Conv2d (groups 1) or Linear through single-input, channel-preserving ops (activations,
    pooling, flattening of 1×1 maps); (2) the tensor it reads is not a layer's output made for it alone
    (it comes from an addition or a concatenation, or its producer has other readers); and (3) its
    channels are read elsewhere too: its dependency group holds another BN or another consumer. A BN
    that already selects is always a site.

    Condition (2) keeps a BN behind a depthwise convolution (MobileNet) a group member: its channels are
    coupled to other BNs through the convolution, but they are produced for it alone, and removing them
    where they are produced saves more.
    """
    names = {m: n for n, m in model.named_modules()}
    sites = []
    for bn in model.modules():
        if not isinstance(bn, nn.BatchNorm2d) or not bn.affine or bn not in graph.module2node:
            continue
        consumer = _single_consumer(graph, bn)
        if consumer is None:
            continue
        if isinstance(bn, SelectBatchNorm2d) or (
                _reads_shared_tensor(graph, bn) and _reads_shared_channels(graph, bn, consumer)):
            sites.append(SelectionSite(names[bn], bn, names[consumer], consumer))
    return sites


def _channelwise(node) -> bool:
    """A single-input op of torch-pruning's graph that maps channel c to channel c."""
    from torch_pruning import ops

    if len(node.inputs) != 1:
        return False
    if isinstance(node.module, ops._ReshapeOp):
        return True
    if not isinstance(node.module, ops._ElementWiseOp):
        return False
    op = str(getattr(node.module, "_grad_fn", "")).lower().replace("backward", "").rstrip("0123456789")
    return op in _CHANNELWISE_GRAD_FNS


def _reads_shared_tensor(graph, bn: nn.BatchNorm2d) -> bool:
    node = graph.module2node[bn]
    if len(node.inputs) != 1:
        return True
    node = node.inputs[0]
    while len(node.outputs) == 1 and _channelwise(node):
        node = node.inputs[0]
    produced_here = isinstance(node.module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
    return len(node.outputs) > 1 or not produced_here


def _single_consumer(graph, bn: nn.BatchNorm2d) -> nn.Module | None:
    node = graph.module2node[bn]
    while len(node.outputs) == 1:
        node = node.outputs[0]
        mod = node.module
        if isinstance(mod, nn.Conv2d):
            ok = mod.groups == 1 and mod.in_channels == bn.num_features
            return mod if ok else None
        if isinstance(mod, nn.Linear):
            return mod if mod.in_features == bn.num_features else None
        if not _channelwise(node):
            return None
    return None


def _reads_shared_channels(graph, bn: nn.BatchNorm2d, consumer: nn.Module) -> bool:
    pruner = graph.get_pruner_of_module(bn)
    group = graph.get_pruning_group(bn, pruner.prune_out_channels, list(range(bn.num_features)))
    for item in group:
        mod = item.dep.target.module
        if mod is bn or mod is consumer:
            continue
        if isinstance(mod, nn.BatchNorm2d):
            return True
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and graph.is_in_channel_pruning_fn(item.dep.handler):
            return True
    return False


@torch.no_grad()
def apply_selection(model: nn.Module, site: SelectionSite, keep: Sequence[int]) -> nn.BatchNorm2d:
    """Keep features `keep` (positions among the BN's current features) for this site's branch only."""
    keep = sorted(int(i) for i in keep)
    n = site.bn.num_features
    if not keep or keep[0] < 0 or keep[-1] >= n:
        raise CompressError(f"invalid channels kept for {site.bn_name}")
    removed = sorted(set(range(n)) - set(keep))
    bn = site.bn
    if not removed and not isinstance(bn, SelectBatchNorm2d):
        return bn  # nothing dropped: no gather needed
    if not isinstance(bn, SelectBatchNorm2d):
        new = SelectBatchNorm2d(n, n, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.load_state_dict({**bn.state_dict(), "index": new.index})
        new.to(bn.weight.device)
        new.train(bn.training)
        _set_submodule(model, site.bn_name, new)
        site.bn = bn = new
    _shrink(bn, keep)
    if removed:
        import torch_pruning as tp

        if isinstance(site.consumer, nn.Conv2d):
            tp.prune_conv_in_channels(site.consumer, removed)
        else:
            tp.prune_linear_in_channels(site.consumer, removed)
    return bn


def _shrink(bn: SelectBatchNorm2d, keep: list[int]) -> None:
    idx = torch.as_tensor(keep, dtype=torch.long, device=bn.index.device)
    bn.index = bn.index[idx].clone()
    bn.num_features = len(keep)
    if bn.affine:
        bn.weight = nn.Parameter(bn.weight.detach()[idx].clone())
        bn.bias = nn.Parameter(bn.bias.detach()[idx].clone())
    if bn.track_running_stats:
        bn.running_mean = bn.running_mean[idx].clone()
        bn.running_var = bn.running_var[idx].clone()


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
