"""Consumer-side channel selection: prune a BN that reads a shared tensor for its own branch only.

In a pre-activation ResNet every block's first BN reads the residual stream, and in a DenseNet every
BN reads the concatenation of earlier features. Those channels are shared with other readers, so they
cannot be removed where they are produced. Network slimming (Liu et al., 2017) instead drops them for
one consumer: the BN sees only the channels it keeps. Here that is `SelectBatchNorm2d`, a BatchNorm2d
that first gathers its kept input channels (constant indices; ONNX `Gather`), followed by a
correspondingly narrower consumer convolution or linear layer.

Gathering before the BN instead of after it (where the official code puts its selection layer) is
equivalent, since BN acts per channel, and stores γ, β and statistics for the kept channels only.

This is `shared="select"`, the paper's way and `compress prune`'s default. A gather costs time that
MACs do not count, and the shared tensor keeps its width: `shared="narrow"` (compress.slimming.units)
removes a shared channel from the tensor itself and from every reader at once (scored by the mean |γ|
of its readers), and makes no selection.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from compress.errors import CompressError

WIDTH_TYPE = "SelectBatchNorm2d"

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


# --- BN subclasses: the gather goes in front of the subclass's own forward ----------------------------

_SELECTING: dict[type, type] = {nn.BatchNorm2d: SelectBatchNorm2d}


def selecting_class(cls: type) -> type:
    """The selecting variant of a BatchNorm2d class: SelectBatchNorm2d's gather, then `cls`'s own forward.

    For timm's BatchNormAct2d that keeps the activation and drop layer (replacing it with a plain
    SelectBatchNorm2d dropped them: a silently wrong network). The class is made once per BN class and
    named Select<Name>; it is a subclass of both, so isinstance checks for either still hold."""
    if issubclass(cls, SelectBatchNorm2d):
        return cls
    if cls not in _SELECTING:
        name = f"Select{cls.__name__}"
        while name in globals():
            name += "_"
        made = type(name, (SelectBatchNorm2d, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = made  # so that pickling the model finds the class
        _SELECTING[cls] = made
    return _SELECTING[cls]


def _as_selecting(bn: nn.BatchNorm2d, in_channels: int, index: torch.Tensor) -> SelectBatchNorm2d:
    """A copy of `bn` (same settings, children and tensors) that first gathers `index` of `in_channels`."""
    cls = selecting_class(type(bn))
    new = cls.__new__(cls)
    new.__dict__.update({k: v.copy() if isinstance(v, (dict, set)) else v for k, v in bn.__dict__.items()})
    new.in_channels = int(in_channels)
    _check_index(index, bn.num_features, new.in_channels)
    new.register_buffer("index", index.clone().to(next(iter(bn.buffers()), index).device))
    return new


# --- model.json widths ------------------------------------------------------------------------------

def width_spec(m: SelectBatchNorm2d) -> dict:
    spec = {"type": WIDTH_TYPE, "num_features": m.num_features, "in_channels": m.in_channels,
            "selected": [int(i) for i in m.index]}
    base = _base_class(type(m))
    if base is not nn.BatchNorm2d:
        spec["batchnorm"] = base.__name__  # the class that selects: BatchNormAct2d keeps its activation
    return spec


def _base_class(cls: type) -> type:
    for klass in cls.__mro__:
        if issubclass(klass, nn.BatchNorm2d) and not issubclass(klass, SelectBatchNorm2d):
            return klass
    return nn.BatchNorm2d


def from_width_spec(old: nn.BatchNorm2d, spec: dict) -> SelectBatchNorm2d:
    """The selecting BN that `spec` describes, made from `old` (the unpruned architecture's BN, whose
    class and children it keeps); its weights come from the state dict."""
    try:
        n, c = int(spec["num_features"]), int(spec["in_channels"])
        selected = [int(i) for i in spec.get("selected", range(n))]
    except (KeyError, TypeError, ValueError) as exc:
        raise CompressError(f"{WIDTH_TYPE} width entry is malformed: {exc}") from None
    # The entry names the class that selected; a plain entry on a BN subclass would add (or drop) what the
    # subclass does (timm's BatchNormAct2d: its activation) to the saved network: refused either way.
    base = _base_class(type(old)).__name__
    if spec.get("batchnorm", "BatchNorm2d") != base:
        raise CompressError(f"{WIDTH_TYPE} width entry selects for a {spec.get('batchnorm', 'BatchNorm2d')}, "
                            f"the model has a {base} there")
    if type(old) is nn.BatchNorm2d or type(old) is SelectBatchNorm2d:
        return SelectBatchNorm2d(n, c, old.eps, old.momentum, old.affine, old.track_running_stats, index=selected)
    shell = copy.deepcopy(old)  # the subclass with its children (activation, drop); tensors resized below
    plain = nn.BatchNorm2d(n, old.eps, old.momentum, old.affine, old.track_running_stats)
    for key in ("weight", "bias"):
        if old.affine:
            setattr(shell, key, getattr(plain, key))
    for key in ("running_mean", "running_var"):
        if old.track_running_stats:
            setattr(shell, key, getattr(plain, key))
    shell.num_features = n
    return _as_selecting(shell, c, torch.as_tensor(selected, dtype=torch.long))


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


@torch.no_grad()
def apply_selection(model: nn.Module, site: SelectionSite, keep: Sequence[int], *,
                    prune_consumer: bool = True) -> nn.BatchNorm2d:
    """Keep features `keep` (positions among the BN's current features) for this site's branch only.

    The BN keeps its class (a BN subclass becomes its selecting variant, see `selecting_class`). With
    `prune_consumer` the consumer loses the same input channels here; the pruning engine cuts every
    layer itself and passes False."""
    keep = sorted(int(i) for i in keep)
    n = site.bn.num_features
    if not keep or keep[0] < 0 or keep[-1] >= n:
        raise CompressError(f"invalid channels kept for {site.bn_name}")
    removed = sorted(set(range(n)) - set(keep))
    bn = site.bn
    if not removed and not isinstance(bn, SelectBatchNorm2d):
        return bn  # nothing dropped: no gather needed
    if not isinstance(bn, SelectBatchNorm2d):
        new = _as_selecting(bn, n, torch.arange(n))
        _set_submodule(model, site.bn_name, new)
        site.bn = bn = new
    _shrink(bn, keep)
    if removed and prune_consumer:
        if isinstance(site.consumer, nn.Conv2d):
            w = site.consumer.weight
            kept = torch.as_tensor(keep, device=w.device)
            site.consumer.weight = nn.Parameter(w.detach()[:, kept].clone(), requires_grad=w.requires_grad)
            site.consumer.in_channels = len(keep)
        else:
            w = site.consumer.weight
            kept = torch.as_tensor(keep, device=w.device)
            site.consumer.weight = nn.Parameter(w.detach()[:, kept].clone(), requires_grad=w.requires_grad)
            site.consumer.in_features = len(keep)
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
