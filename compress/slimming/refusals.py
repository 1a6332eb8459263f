"""What pruning refuses rather than return a network other than the one asked for: lazy layers with no
shape yet, a floor that keeps every channel, and scores that tie at the threshold (γ as initialized), where
a 5% prune would remove most of the network."""

from __future__ import annotations

import math

from torch import nn

from compress.errors import CompressError
from compress.slimming.decide import Chooser
from compress.slimming.training_only import listed
from compress.slimming.units import PruningUnits

TIE_SLACK = 0.05  # how far past the request a prune may land before ties at its threshold are refused


def refuse_lazy(model: nn.Module) -> None:
    """A lazy layer has no shape until its first forward: its channels cannot be counted or copied yet."""
    lazy = [n or type(model).__name__ for n, m in model.named_modules()
            if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params()]
    if lazy:
        raise CompressError(f"{type(model).__name__} has lazy layers not initialized yet ({listed(lazy)}): run one "
                            "forward pass on an example first")


def refuse_uncuttable(model: nn.Module) -> None:
    """Layers that cannot be counted or copied as they stand: lazy ones, and the hook-based weight_norm."""
    refuse_lazy(model)
    refuse_reparametrized(model)


def refuse_reparametrized(model: nn.Module) -> None:
    """torch.nn.utils.weight_norm's and spectral_norm's older form computes the weight in a forward hook from
    tensors of other names; such a module cannot even be copied (deepcopy raises), and the self-check
    needs a copy. Refused up front, with the way out. Their parametrize form copies, and is named only if
    pruning it fails (reparametrized_hint): a parametrized layer that keeps its width prunes as any other."""
    hooked = [name or type(model).__name__ for name, m in model.named_modules()
              if any(type(h).__name__ in ("WeightNorm", "SpectralNorm") for h in m._forward_pre_hooks.values())]
    if hooked:
        raise CompressError(f"{type(model).__name__} has layers whose weight a hook computes from other tensors "
                            f"(torch.nn.utils.weight_norm or spectral_norm: {listed(hooked)}), which pruning "
                            "cannot cut or copy: remove it first (torch.nn.utils.remove_weight_norm(layer) or "
                            "remove_spectral_norm(layer)), prune, then apply it again")


def reparametrized_hint(model: nn.Module) -> str:
    """Why a prune that failed may have failed: layers whose weight a parametrization computes."""
    from torch.nn.utils import parametrize

    found = [name or type(model).__name__ for name, m in model.named_modules() if parametrize.is_parametrized(m)]
    if not found:
        return ""
    return (f"; {listed(found)} compute their weight from other tensors (weight_norm, spectral_norm or another "
            "parametrization), which pruning cannot cut: remove it first "
            "(torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight')), prune, then apply it again")


def refuse_floor_keeping_all(units: PruningUnits, chooser: Chooser, percent: float) -> None:
    """A floor that keeps every channel of every unit whatever the threshold would hand back the model
    unpruned as the answer to `percent`: refused, as a budget the floor cannot meet is."""
    every = [*units.groups, *units.selections]
    if any(bool(u.free.any()) for u in every) and \
            all(len(chooser(u, u.scores, math.inf)) == u.scores.numel() for u in every):
        floor = chooser.floor
        raise CompressError(f"the floor (min_keep {floor['min_keep']:g}, min_channels {floor['min_channels']}, "
                            f"round_to {floor['round_to']}) keeps every channel of every layer: percent "
                            f"{percent:g} would prune nothing; lower min_keep (--min-keep), min_channels or "
                            "round_to (--round-to)")


def refuse_ties(units: PruningUnits, threshold: float, asked: str, result: str) -> None:
    """Channels whose scores equal a nonzero threshold all go together: with γ as they are after
    initialization (all 1), a 5% prune removed 80% of the channels. Refused: such γ rank nothing. Ties at
    zero are left to go (channels held at zero by the sparse stage, which compute nothing)."""
    if not (math.isfinite(threshold) and threshold > 0):
        return
    tied = sum(int(((u.scores if u.importance is None else u.importance) == threshold)[u.free].sum())
               for u in [*units.groups, *units.selections])
    if tied >= 2:
        raise CompressError(f"{tied} channels share the score {threshold:g} at the threshold, so {asked} would "
                            f"{result}: their BN γ do not rank them (an untrained network, or γ reset?); train "
                            "with a sparsity penalty first (compress slim / train --sparsity)")


def refuse_nothing_removed(percent: float, threshold: float, removed: float, *, every_bn: bool) -> None:
    """A percent that removes no channel would hand back the model unpruned as its answer. With γ the threshold
    is taken over every BN (`every_bn`, the paper's rule), so it can fall among the γ of layers whose channels
    cannot be removed, such as the residual branch's last BN that timm initializes at zero."""
    if percent <= 0 or removed > 0:
        return
    population = "every BN's |γ|, of layers that cannot be pruned too" if every_bn else "every unit's score"
    raise CompressError(f"percent {percent:g} would prune nothing: no removable channel scores under its threshold "
                        f"{threshold:g} (the {percent:.0%} point of {population}), or the floor keeps those that "
                        "do; prune to a budget instead (--target-macs / --target-params), or train with a sparsity "
                        "penalty first")
