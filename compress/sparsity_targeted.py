"""L1 on the BN γ of the channels the coming prune will remove, and on no others.

The steered penalty of compress.sparsity pulls every γ, so the whole network pays for the half that goes:
on the quick preset its sparse stage ended 5 pp under five more plain epochs (benchmarks/peers/README.md).
Here the channels to pull are the ones `prune` would remove now, decided by the run's own prune request
(its percent or budget, floor, rounding and importance: `compress.slimming.removal_preview`), and
re-decided a few dozen times per run, as γ move. Only those γ feel the proximal shrink; the channels that
stay train as in plain training. The pulled ones reach zero by 40% of the run (the steering of "auto":
λ grows while the largest pulled |γ| is above a line from its start to zero at `reach`, never under the
budget's λ) and are held at exactly zero from then on, so pruning them at the end removes channels that
emit only β, which is folded forward: exact, with no BN re-estimation. Selecting the weights to
penalize before pruning and driving them down with a growing penalty is the idea of Wang et al., "Neural
pruning via growing regularization" (ICLR 2021); here it acts on BN γ and uses the toolkit's own
decision (global threshold, budget, floor, rounding, importance), so the channels pulled are the ones the
prune takes.

    SlimOptions(train_recipe=Recipe.named("fast", epochs=5), finetune_recipe=Recipe.finetuning("fast", epochs=5),
                prune=PruneRequest(target_macs=0.5), sparsity=TargetedSparsity())   # as the quick preset
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from compress.errors import CompressError
from compress.request import PruneRequest, importance_label, slimming_keywords
from compress.sparsity import AUTO_MODE, SparsityConfig, SparsityRegularizer

SELECTIONS = 24  # decisions per run: every ~4% of the steps; a decision costs one traced forward
# By when (fraction of the run) the pulled γ should reach zero. 0.4, 0.7 and 0.9 were measured on the
# quick scale (benchmarks/peers/README.md, 3 seeds, same widths at each seed): 67.73%, 67.26%, 67.61%;
# the differences are within the run-to-run spread, and 0.4 leaves the longest run at the final widths.
REACH = 0.4


class TargetedRegularizer(SparsityRegularizer):
    """Proximal L1 steered on the γ of the channels `request` would prune; `input_size` (C, H, W) sizes
    the traced forward that decides them."""

    def __init__(self, model: nn.Module, request: PruneRequest, input_size: Sequence[int], *,
                 lrs: Sequence[float], selections: int = SELECTIONS, reach: float = REACH):
        _check_decidable(request)
        request.require_target()
        super().__init__(model, "auto", mode=AUTO_MODE, lrs=lrs, percent=request.percent or 0.5)
        if len(input_size) != 3 or not all(isinstance(s, int) and s > 0 for s in input_size):
            raise CompressError(f"targeted sparsity needs the input size (C, H, W), got {tuple(input_size)!r}")
        self.model = model
        self.request = request
        self.reach = reach
        self.input_size = tuple(input_size)
        self.every = max(1, (self.total_steps or selections) // max(1, selections))
        self.masks: dict[int, torch.Tensor] = {}
        self.selected = 0
        self.decided_at: int | None = None  # the step of the last decision
        self._modules = {id(m.weight): name for name, m in model.named_modules()
                         if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.weight is not None}
        # shared="narrow": a layer reading a removed channel without a BN gates it with its input weights
        self._gating_layers = {name: m.weight for name, m in model.named_modules()
                               if isinstance(m, (nn.Conv2d, nn.Linear))}

    def select(self) -> None:
        """Decide again which channels the prune would remove, by the current γ."""
        from compress.slimming.engine import removal_preview

        p = self.gammas[0] if self.gammas else None
        example = torch.zeros(1, *self.input_size, device=p.device if p is not None else "cpu")
        r = self.request
        bn = removal_preview(self.model, r.percent, example, target_macs=r.target_macs,
                             target_params=r.target_params, training_only_check=self.decided_at is None,
                             **slimming_keywords(r))
        masks = {}
        for g in self.gammas:
            idx = bn.get(self._modules.get(id(g)), [])
            if idx:
                m = torch.zeros(g.numel(), dtype=torch.bool, device=g.device)
                m[torch.as_tensor(idx, dtype=torch.long, device=g.device)] = True
                masks[id(g)] = m
        for name, idx in bn.items():  # input channels of layers whose weights gate removed channels
            w = self._gating_layers.get(name)
            if w is not None and idx:
                m = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
                m[:, torch.as_tensor(idx, dtype=torch.long, device=w.device)] = True
                masks[id(w)] = m
        self.masks = masks
        self.decided_at = self.step_index
        total = sum(g.numel() for g in self.gammas)
        self.selected = sum(int(masks[id(g)].sum()) for g in self.gammas if id(g) in masks)
        self.percent = min(max(self.selected / total, 1e-6), 0.99) if total else self.percent

    def quantile_target(self, step: int) -> float:
        if not self.total_steps:
            return 0.0
        return self.start_quantile * max(0.0, 1.0 - step / (self.reach * self.total_steps))

    def _goal(self) -> float:
        return 1.0  # the quantile steered is the largest pulled |γ|; nothing else is pulled to overshoot

    def _sorted_gammas(self) -> torch.Tensor:
        parts = [g.detach().abs()[self.masks[id(g)]].flatten() for g in self.gammas if id(g) in self.masks]
        return torch.cat(parts).float().sort().values if parts else torch.zeros(0)

    @torch.no_grad()
    def _shrink(self, optimizer, _args, _kwargs) -> None:
        lam, self._pending = self._pending, 0.0
        # Also on the first step of a resumed run: the channels are not part of the saved state.
        if self.decided_at is None or (self.step_index - 1) % self.every == 0:
            self.select()
        if lam <= 0 or not self.masks:
            return
        # Past `reach` the pulled γ are held at exactly zero: a loss gradient that outweighs lr·λ (as the
        # cosine schedule ends, with momentum) left one of PreResNet-56's at 1.03e-3, which is enough for
        # the prune stage to call the removal inexact and re-estimate BN statistics (−6 pp there).
        hold = bool(self.total_steps) and self.step_index >= self.reach * self.total_steps
        applied = 0.0
        for group in optimizer.param_groups:
            t = group["lr"] * lam
            for p in group["params"]:
                m = self.masks.get(id(p))
                if m is None:
                    continue
                if hold:
                    p.masked_fill_(m, 0.0)
                else:
                    p.copy_(torch.where(m, torch.sign(p) * torch.clamp(p.abs() - t, min=0.0), p))
                applied = t
        self.pull_applied += applied
        self._steer()

    def record(self) -> dict:
        out = super().record()
        total = sum(g.numel() for g in self.gammas) or 1
        out["sparsity_selected"] = self.selected / total
        if self.masks:
            pulled = self._sorted_gammas()
            out["sparsity_selected_at_zero"] = float((pulled < 1e-3).float().mean()) if pulled.numel() else 1.0
        return out


NEEDS_REQUEST = ("targeted sparsity pulls the channels a prune will remove, so it needs that prune: use it in a slim "
                 "run (`compress slim --sparsity targeted`, compress.slim) or give "
                 "TargetedSparsity(prune=PruneRequest(...))")


def _check_decidable(request: PruneRequest) -> None:
    if request.target_latency_ms is not None:
        raise CompressError("targeted sparsity decides by percent, MACs or parameters, and a latency target is "
                            "measured on the pruned network, which does not exist during training: give "
                            "--sparsity auto or a λ (or --preset paper) with --target-latency")


@dataclass(frozen=True)
class TargetedSparsity(SparsityConfig):
    """A SparsityConfig whose penalty acts only on the channels `prune` will remove. `prune` is filled in
    by `compress.slim` from the run's own request when left None; `selections` is how many times per run
    the channels are decided again."""

    prune: PruneRequest | None = None
    selections: int = SELECTIONS
    reach: float = REACH

    def __post_init__(self):
        if self.strength != "auto" or self.mode != AUTO_MODE or self.ramp is not None:
            raise CompressError("targeted sparsity is steered ('auto', proximal, no ramp); it takes no strength, "
                                "mode or ramp")
        if not (isinstance(self.selections, int) and not isinstance(self.selections, bool) and self.selections >= 1):
            raise CompressError(f"selections must be a whole number >= 1, got {self.selections!r}")
        if not (isinstance(self.reach, (int, float)) and 0.0 < self.reach <= 1.0):
            raise CompressError(f"reach must be a fraction of the run in (0, 1], got {self.reach!r}")
        if self.prune is not None and not isinstance(self.prune, PruneRequest):
            raise CompressError(f"prune must be a PruneRequest, got {type(self.prune).__name__}")

    def check_ready(self) -> None:
        """Refuse before any work when there is no prune to prepare for, or one it cannot decide."""
        if self.prune is None:
            raise CompressError(NEEDS_REQUEST)
        _check_decidable(self.prune)

    def for_request(self, request: PruneRequest) -> TargetedSparsity:
        from dataclasses import replace

        return replace(self, prune=request)

    def build(self, model: nn.Module, lrs: Sequence[float], input_size=None) -> SparsityRegularizer:
        self.check_ready()
        if input_size is None:
            raise CompressError("targeted sparsity needs the input size (C, H, W) of the training images")
        if isinstance(input_size, int) and not isinstance(input_size, bool):
            input_size = (3, input_size, input_size)  # N, as save_model takes it: N×N RGB images
        if not (isinstance(input_size, (tuple, list)) and len(input_size) == 3):
            raise CompressError(f"targeted sparsity's input_size is (C, H, W) or N, got {input_size!r}")
        return TargetedRegularizer(model, self.prune, tuple(int(s) for s in input_size), lrs=lrs,
                                   selections=self.selections, reach=self.reach)

    def describe(self) -> dict:
        r = self.prune
        # The floor and rounding decide which channels are pulled as much as the target does: a stage steered
        # for other ones must not be resumed or kept for this request (the quick preset's rounding changed).
        floor = {} if r is None else {"floor": {"min_keep": r.min_keep, "min_channels": r.min_channels,
                                                "round_to": r.round_to, "shared": r.shared,
                                                "importance": importance_label(r.importance)}}
        return {**super().describe(), "targeted": True, "selections": self.selections, "reach": self.reach,
                **({"prepares": r.text()} if r is not None else {}), **floor}
