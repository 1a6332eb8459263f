"""Presets of a slimming run: what `compress slim` (and `compress.slim` callers) use for what is not given.

* ``quick``: VGG-19 ×0.25 on 10k CIFAR images, 5 plain + 5 sparse + 5 fine-tuning epochs of the `fast`
  recipe, half the MACs (``--target-macs 0.5``), ``--sparsity targeted``: the L1 pull acts only on the
  channels that prune will remove, which it holds at zero, so the pruning is exact and the channels
  that stay train as in plain training (compress.sparsity_targeted). On the peers benchmark it ends
  1.0–2.7 pp above (paired, per seed) the uniform pull (``--sparsity auto``, 50% of channels) that this
  preset used before, and ahead of Torch-Pruning's methods at equal MACs: benchmarks/peers/README.md.
  Channels that several BNs read (a pre-activation ResNet's residual stream) are removed from the shared
  tensor and every reader at once, scored by the readers' mean |γ| (``--shared narrow``), with no channel
  selection: on PreResNet-56 that made the pruned network as fast as Torch-Pruning's at equal MACs (1%
  behind on one of four backend and batch cells) instead of 1.5-2.6x slower (benchmarks/peers/README.md).
  A VGG has no such channels: its decision is the same either way.
* ``paper``: Liu et al.'s recipe: full data, 160 + 160 epochs, 70% of channels, λ = 1e-4 for VGG and
  1e-5 for the other networks (`paper_sparsity`), and the paper's channel selections (``--shared select``).

    run = resolve("quick", SlimChoices(arch="vgg11"))
    compress.slim(run.arch, DataOptions("cifar10", run.train_limit, run.test_limit), "runs/q", run.options,
                  arch_kwargs=run.arch_kwargs)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compress.request import TARGETS, PruneRequest


@dataclass(frozen=True)
class Preset:
    """Defaults of a slimming run; `vgg_width` applies to a VGG built from scratch without arguments."""

    name: str
    arch: str
    vgg_width: float | None
    train_limit: int | None
    test_limit: int | None
    pretrain_epochs: int  # 0 when the run starts from a model directory
    epochs: int
    finetune_epochs: int
    recipe: str
    percent: float | None  # None: prune to target_macs
    target_macs: float | None
    sparsity: str  # "targeted": TargetedSparsity(); "auto": SparsityConfig(); "paper": paper_sparsity(arch)
    shared: str = "select"  # PruneRequest.shared: channel selections (the paper's) or a narrowed stream
    # PruneRequest.round_to: the paper keeps exact widths; the quick preset rounds to ONNX Runtime's CPU block
    # here, without which its network ran 1.13-1.65x slower than the unpruned one
    # (benchmarks/results/main_job/README.md, "Why the quick preset now rounds").
    round_to: int | str = 1

    def sparsity_for(self, arch: str):
        if self.sparsity == "targeted":
            from compress.sparsity_targeted import TargetedSparsity

            return TargetedSparsity()
        if self.sparsity == "auto":
            from compress.sparsity import SparsityConfig

            return SparsityConfig()
        return paper_sparsity(arch)


QUICK = Preset("quick", arch="vgg19", vgg_width=0.25, train_limit=10_000, test_limit=2_000, pretrain_epochs=5,
               epochs=5, finetune_epochs=5, recipe="fast", percent=None, target_macs=0.5, sparsity="targeted",
               shared="narrow", round_to="auto")
PAPER = Preset("paper", arch="vgg19", vgg_width=None, train_limit=None, test_limit=None, pretrain_epochs=0,
               epochs=160, finetune_epochs=160, recipe="paper", percent=0.7, target_macs=None, sparsity="paper")
PRESETS = {p.name: p for p in (QUICK, PAPER)}


def paper_sparsity(arch: str) -> float:
    """The paper's λ: 1e-4 for VGG, 1e-5 for the pre-activation ResNets, DenseNets and the rest."""
    return 1e-4 if arch.startswith("vgg") else 1e-5


def default_min_keep(passes: int) -> float:
    """The floor per pruning: 20% of a layer, 50% per pass in the multi-pass scheme (paper Table 4)."""
    return 0.5 if passes > 1 else 0.2


@dataclass(frozen=True)
class SlimChoices:
    """What a slimming run was asked for; None takes the preset's value. `prune` holds PruneRequest
    keywords (a target, the floor, round_to, backend); with no target the preset's own is used."""

    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    from_model: bool = False  # sparse training starts from a model directory's weights
    train_limit: int | None = None
    test_limit: int | None = None
    pretrain_epochs: int | None = None
    epochs: int | None = None
    finetune_epochs: int | None = None
    recipe: str | None = None
    batch_size: int | None = None
    lr: float | None = None
    finetune_lr: float | None = None
    weight_decay: float | None = None
    sparsity: Any = None
    prune: dict = field(default_factory=dict)
    passes: int = 1
    distill: bool = False


@dataclass(frozen=True)
class SlimRun:
    """A resolved run: what `compress.slim` and `DataOptions` take."""

    arch: str
    arch_kwargs: dict
    train_limit: int | None
    test_limit: int | None
    options: Any  # compress.stages.slim.SlimOptions


def resolve(preset: Preset | str, choices: SlimChoices = SlimChoices()) -> SlimRun:
    """`choices` with every unset value taken from `preset` (a Preset or its name)."""
    from compress.stages.slim import SlimOptions

    p = PRESETS[preset] if isinstance(preset, str) else preset
    c = choices
    arch = c.arch or p.arch
    kwargs = dict(c.arch_kwargs)
    if p.vgg_width is not None and arch.startswith("vgg") and not c.from_model and not kwargs:
        kwargs = {"width": p.vgg_width}
    pretrain = c.pretrain_epochs if c.pretrain_epochs is not None else (0 if c.from_model else p.pretrain_epochs)
    options = SlimOptions(train_recipe=_recipe(c, c.recipe or p.recipe, c.epochs or p.epochs, c.lr),
                          finetune_recipe=_recipe(c, c.recipe or p.recipe, c.finetune_epochs or p.finetune_epochs,
                                                  c.finetune_lr, finetuning=True),
                          pretrain_recipe=_recipe(c, c.recipe or p.recipe, pretrain, c.lr) if pretrain else None,
                          prune=_request(p, c), sparsity=c.sparsity if c.sparsity is not None else p.sparsity_for(arch),
                          passes=c.passes, distill=c.distill)
    return SlimRun(arch, kwargs, c.train_limit or p.train_limit, c.test_limit or p.test_limit, options)


def _request(p: Preset, c: SlimChoices) -> PruneRequest:
    asked = {k: v for k, v in c.prune.items() if v is not None}
    if not any(t in asked for t in TARGETS):
        asked.update({"percent": p.percent} if p.target_macs is None else {"target_macs": p.target_macs})
    asked.setdefault("min_keep", default_min_keep(c.passes))
    asked.setdefault("shared", p.shared)
    asked.setdefault("round_to", p.round_to)
    if asked["round_to"] == "auto":  # resolved for this machine here, so the run's settings name the number
        from compress.slimming import resolve_round_to

        asked["round_to"] = resolve_round_to("auto")
    return PruneRequest.from_keywords(**asked)


def _recipe(c: SlimChoices, name: str, epochs: int, lr: float | None, finetuning: bool = False):
    from compress.training import Recipe

    make = Recipe.finetuning if finetuning else Recipe.named
    return make(name, epochs=epochs, batch_size=c.batch_size, lr=lr, weight_decay=c.weight_decay)
