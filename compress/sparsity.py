"""L1 sparsity on BatchNorm scaling factors, as one call in any training loop.

    reg = SparsityRegularizer(model, 1e-4)              # λ, the paper's subgradient
    for x, y in loader:
        loss = criterion(model(x), y)
        optimizer.zero_grad(); loss.backward()
        reg.step(optimizer)                             # between backward() and step()
        optimizer.step()

Two updates are offered:
- "subgradient" (Liu et al. 2017) adds λ·sign(γ) to the γ gradients. Under SGD momentum μ the pull is
  amplified by about 1/(1−μ), and γ hover around zero rather than reaching it.
- "proximal" (Huang & Wang, ECCV 2018) soft-thresholds γ right after the optimizer step,
  γ ← sign(γ)·max(|γ| − lr·λ, 0), so channels the loss does not defend end exactly at zero, where
  removing them (with β folded into the next layer) changes nothing.

Strength that carries across schedules: the pull one γ feels over a run is about λ·Σ lr. A `Budget(P)`
picks λ = P / Σ_t lr_t·ramp_t for the schedule at hand, so a 15-epoch run and a 160-epoch run pull
equally hard.

A fixed pull does not polarize equally at every scale, though: whether a γ stays at zero under the
proximal update depends on λ against that channel's loss gradient, not on the pull, and a long run at the
same pull has a small λ that the loss outweighs (issue 11's CPU reference: P = 1 over 5,850 steps left
4.5% of γ at zero). So `"auto"` (proximal) steers λ by what it is for: it starts from the measured budget
(benchmarks/results/sparsity_study.md) and, a few hundred times per run, compares the |γ| below which
`percent` (+2%) of the γ lie with a straight line from its starting value to zero at 70% of the run. It
raises λ while that quantile is above the line and lowers it, never under the budget's λ, while below,
or while more than the goal (+2%) sit at zero. The rest of the run then trains the network with those
channels held at zero, which is what makes pruning them lossless.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from compress.errors import CompressError

MODES = ("subgradient", "proximal")


@dataclass(frozen=True)
class Budget:
    """Total pull P = Σ_t λ_t·lr_t on one γ over the run (P/(1−μ) in γ units for the subgradient
    under momentum μ; exactly P for the proximal update)."""

    pull: float

    def __post_init__(self):
        if isinstance(self.pull, bool) or not (isinstance(self.pull, (int, float)) and math.isfinite(self.pull)
                                                and self.pull >= 0):
            raise CompressError(f"sparsity budget must be a finite number >= 0, got {self.pull!r}")


# Proximal: measured at the quick preset's scale (benchmarks/results/sparsity_study.md), the pull that
# drove half the γ of VGG-19 ×0.25 under 1e-2 in a 5-epoch sparse fine-tuning stage, after which pruning
# 50% cost 1.4 pp without BN re-estimation. Subgradient: issue 11's one probe that polarized at no cost.
AUTO_BUDGET = {"proximal": 1.0, "subgradient": 0.2}
AUTO_MODE = "proximal"

# The polarization controller behind "auto" (proximal): what counts as zero, the margin over the planned
# percent, the fraction of the run by which it should be reached, how many times per run λ is adjusted
# and by what factor (1.06 per check compounds to ~10^4× by AUTO_REACH, ample for any scale). AUTO_REACH
# 0.7 was measured against 0.5 and 0.85: benchmarks/results/cpu_reference_auto_2026-11-25/README.md.
ZERO = 1e-3
AUTO_MARGIN = 0.02
AUTO_REACH = 0.7
AUTO_CHECKS = 240
AUTO_GROWTH = 1.06
AUTO_LOOKAHEAD = 8

Strength = float | Budget | str


def bn_gammas(model: nn.Module) -> list[nn.Parameter]:
    """γ of every affine BatchNorm (1d/2d/3d): the factors the penalty acts on, as in the paper."""
    return [m.weight for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.weight is not None]


def _ramp_window(ramp) -> tuple[float, float] | None:
    if ramp is None or ramp == 0:
        return None
    start, end = (0.0, float(ramp)) if isinstance(ramp, (int, float)) else (float(ramp[0]), float(ramp[1]))
    if not 0.0 <= start <= end <= 1.0:
        raise CompressError(f"sparsity ramp must be a fraction or (start, end) fractions of the run, got {ramp!r}")
    return start, end


def ramp_factor(progress: float, ramp) -> float:
    """λ multiplier at `progress` (fraction of the run): 0 before start, linear up to 1 at end."""
    window = _ramp_window(ramp)
    if window is None:
        return 1.0
    start, end = window
    if progress < start:
        return 0.0
    if progress >= end:
        return 1.0
    return (progress - start) / (end - start) if end > start else 1.0


def lambda_for_budget(budget: float, lrs: Sequence[float], ramp=None) -> float:
    """The peak λ for which Σ_t λ·ramp_t·lr_t equals `budget` over the schedule `lrs` (one lr per step)."""
    n = len(lrs)
    if n == 0:
        raise CompressError("a sparsity budget needs the learning-rate schedule (lrs) of at least one step")
    bad = next((i for i, lr in enumerate(lrs) if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0)),
               None)
    if bad is not None:  # a NaN made λ NaN (and every γ NaN), an Inf made it 0: no penalty, without a word
        raise CompressError(f"the learning-rate schedule (lrs) must hold finite rates >= 0; step {bad} has "
                            f"{lrs[bad]!r}")
    weighted = sum(lr * ramp_factor(i / n, ramp) for i, lr in enumerate(lrs))
    if weighted <= 0:
        raise CompressError("the learning-rate schedule sums to zero where the sparsity ramp is on; "
                            "no λ can meet a budget")
    return budget / weighted


class SparsityRegularizer:
    """L1 on BN γ, by subgradient or proximal update; call `step(optimizer)` between backward and step.

    `strength` is λ (a float), a `Budget`, or "auto" (the measured budget for `mode`). A budget and a
    ramp need the run's schedule: `lrs`, the learning rate of every step, or `total_steps` for a ramp
    alone; a step past that schedule is refused, since the budget and the ramp were laid over it.
    `percent` is the fraction of γ that "auto" (proximal) steers to zero, and where the logged
    polarization is read for any strength. `step_index` counts calls; set it when resuming.
    """

    def __init__(self, model: nn.Module, strength: Strength = 1e-4, *, mode: str = "subgradient",
                 lrs: Sequence[float] | None = None, total_steps: int | None = None, ramp=None,
                 percent: float = 0.5):
        if mode not in MODES:
            raise CompressError(f"sparsity mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.ramp = ramp
        _ramp_window(ramp)
        self.percent = percent
        self.gammas = bn_gammas(model)
        self._ids = {id(p) for p in self.gammas}
        self.total_steps = len(lrs) if lrs is not None else total_steps
        if ramp is not None and ramp != 0 and not self.total_steps:
            raise CompressError("a sparsity ramp needs the run's length: pass lrs or total_steps")
        self.budget = None
        # Only the proximal update makes exact zeros to steer by; subgradient "auto" is the budget alone.
        self.adaptive = strength == "auto" and mode == "proximal"
        if self.adaptive and not 0.0 < percent < 1.0:
            raise CompressError(f"sparsity 'auto' steers γ towards the planned percent, which must be in (0, 1), "
                                f"got {percent!r}")
        if strength == "auto":
            strength = Budget(AUTO_BUDGET[mode])
        if isinstance(strength, Budget):
            if lrs is None:
                raise CompressError("a sparsity budget needs the learning-rate schedule: pass lrs")
            self.budget = strength.pull
            self.lam = lambda_for_budget(strength.pull, lrs, ramp)
            self.lam_floor = self.lam
        elif isinstance(strength, (int, float)) and not isinstance(strength, bool) and strength >= 0 \
                and math.isfinite(strength):
            self.lam = float(strength)
        else:
            raise CompressError(f"sparsity strength must be λ >= 0, a Budget or 'auto', got {strength!r}")
        self.step_index = 0
        self.pull_applied = 0.0  # Σ λ_t·lr_t actually applied (proximal) — a check on the budget
        self._hooked: dict[int, object] = {}
        self._groups: dict[tuple, list[list[torch.Tensor]]] = {}
        self._pending = 0.0
        self._stepped_grads = None  # subgradient: the γ gradients as the optimizer's last step left them
        self.start_quantile = None  # "auto": the goal quantile when steering began
        self._last_quantile = None

    def _goal(self) -> float:
        return min(self.percent + AUTO_MARGIN, 0.99)

    def _sorted_gammas(self) -> torch.Tensor:
        if not self.gammas:
            return torch.zeros(0)
        return torch.cat([g.detach().abs().flatten() for g in self.gammas]).float().sort().values

    def goal_quantile(self, g: torch.Tensor | None = None) -> float:
        """|γ| at the goal fraction (percent + margin): zero once that many γ are at zero. `g`: the sorted
        |γ| when the caller has them already."""
        g = self._sorted_gammas() if g is None else g
        if not g.numel():
            return 0.0
        return float(g[min(max(math.ceil(self._goal() * g.numel()) - 1, 0), g.numel() - 1)])

    def quantile_target(self, step: int) -> float:
        """Where the goal quantile should be after `step` steps: a line from its start to 0 at AUTO_REACH."""
        if not self.total_steps:
            return 0.0
        return self.start_quantile * max(0.0, 1.0 - step / (AUTO_REACH * self.total_steps))

    def _steer(self) -> None:
        # Steered by the goal quantile, not by the fraction at zero: the quantile answers every shrink at
        # once, while the zero count lags by the time γ take to reach zero, and a controller on a lagging
        # signal overshoots until every channel is dead (measured: the quick preset collapsed to 10%).
        # It looks AUTO_LOOKAHEAD checks ahead at the quantile's current pace, so that λ stops growing
        # once the quantile is on course, rather than when it has caught up (by then λ is far too large).
        interval = max(1, (self.total_steps or AUTO_CHECKS) // AUTO_CHECKS)
        if self.step_index % interval:
            return
        g = self._sorted_gammas()
        if not g.numel():
            return
        quantile = self.goal_quantile(g)
        if self.start_quantile is None:
            self.start_quantile, self._last_quantile = quantile or ZERO, quantile
            return
        pace = quantile - (self._last_quantile if self._last_quantile is not None else quantile)
        self._last_quantile = quantile
        ahead = quantile + AUTO_LOOKAHEAD * pace
        target = self.quantile_target(self.step_index + AUTO_LOOKAHEAD * interval)
        overshoot = float((g < ZERO).float().mean()) > self._goal() + AUTO_MARGIN
        if overshoot or ahead < target:
            # Never below the measured budget's λ: going under it let the quantile lag, and the catch-up
            # that followed cost the quick preset 3.5 pp (its budget alone had polarized it).
            self.lam = max(self.lam / AUTO_GROWTH, self.lam_floor)
        elif quantile > ZERO and ahead > target:
            self.lam *= AUTO_GROWTH

    def resume_from(self, record: dict | None) -> None:
        """Continue a run from its last logged epoch: the steered λ is part of the state. The logged
        `sparsity_lambda` is the λ applied (times the ramp); the steered one underneath it is
        `sparsity_lambda_base` (records written before it existed hold no ramp, or give the applied one)."""
        if self.adaptive and record and record.get("sparsity_lambda"):
            self.lam = float(record.get("sparsity_lambda_base") or record["sparsity_lambda"])
            self.start_quantile = record.get("sparsity_start_quantile")
            self._last_quantile = record.get("sparsity_last_quantile", self._last_quantile)

    def lam_at(self, step: int) -> float:
        if not self.lam:
            return 0.0
        if not self.total_steps:
            return self.lam
        return self.lam * ramp_factor(step / self.total_steps, self.ramp)

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Apply this step's penalty: call after backward (and after unscaling under AMP), before step."""
        if self.total_steps and self.step_index >= self.total_steps and \
                (self.budget is not None or self.adaptive or self.ramp):
            raise CompressError(f"SparsityRegularizer.step was called more often than the {self.total_steps} "
                                "steps of its schedule (lrs or total_steps), over which its budget or ramp was "
                                "laid: give the learning rate of every step of the run")
        lam = self.lam_at(self.step_index)
        self.step_index += 1
        if optimizer is not None:
            self._check_holds_gammas(optimizer)
        if self.mode == "subgradient":
            if optimizer is not None and lam > 0:
                self._refuse_after_optimizer_step(optimizer)
            if lam > 0:
                # One multi-tensor kernel per op (the same arithmetic as a loop of add_), not a few per BN.
                with_grad = [g for g in self.gammas if g.grad is not None]
                if not with_grad and any(g.requires_grad for g in self.gammas):
                    raise CompressError("SparsityRegularizer.step found no gradient on any BN γ, so the penalty "
                                        "would do nothing: call it after loss.backward() and before "
                                        "optimizer.step()")
                if with_grad:
                    torch._foreach_add_([g.grad for g in with_grad], torch._foreach_sign(with_grad), alpha=lam)
            return
        if optimizer is None:
            raise CompressError("the proximal sparsity update needs the optimizer: call step(optimizer)")
        if id(optimizer) not in self._hooked:
            self._hooked[id(optimizer)] = optimizer.register_step_post_hook(self._shrink)
        self._pending = lam

    @torch.no_grad()
    def _shrink(self, optimizer, _args, _kwargs) -> None:
        lam, self._pending = self._pending, 0.0
        if lam <= 0:
            return
        applied = 0.0
        for group, gammas in zip(optimizer.param_groups, self._gammas_by_group(optimizer)):
            gammas = [g for g in gammas if g.grad is not None]  # what the optimizer stepped, nothing else
            if not gammas:
                continue
            t = group["lr"] * lam
            # sign(γ)·max(|γ| − t, 0) as multi-tensor ops: the same arithmetic as per tensor, fewer launches.
            shrunk = torch._foreach_abs(gammas)
            torch._foreach_sub_(shrunk, t)
            torch._foreach_clamp_min_(shrunk, 0.0)
            torch._foreach_mul_(shrunk, torch._foreach_sign(gammas))
            torch._foreach_copy_(gammas, shrunk)
            applied = t
        self.pull_applied += applied
        if self.adaptive:
            self._steer()

    def _refuse_after_optimizer_step(self, optimizer) -> None:
        """A subgradient added after optimizer.step() goes into gradients already used, and the next
        zero_grad() clears it: training would run without the penalty, without a word. Told apart from
        the right order by the gradients: no backward() since the optimizer's last step leaves them the
        same tensors at the same version."""
        if id(optimizer) not in self._hooked:
            self._hooked[id(optimizer)] = optimizer.register_step_post_hook(self._note_step)
        stepped, self._stepped_grads = self._stepped_grads, None
        now = [g.grad for g in self.gammas if g.grad is not None]
        if stepped and len(stepped) == len(now) and \
                all(ref() is grad and version == grad._version for (ref, version), grad in zip(stepped, now)):
            raise CompressError("SparsityRegularizer.step came after optimizer.step(): its penalty goes into "
                                "gradients already used, and zero_grad() clears it; call it after loss.backward() "
                                "and before optimizer.step()")

    def _note_step(self, _optimizer, _args, _kwargs) -> None:
        # Weak references: holding the gradients would keep them alive, and a freed one's id can come back.
        self._stepped_grads = [(weakref.ref(g.grad), g.grad._version) for g in self.gammas if g.grad is not None]

    def _gammas_by_group(self, optimizer) -> list[list[torch.Tensor]]:
        """Per param group, the γ it steps: kept ones only (a frozen γ the optimizer skips is left alone too),
        found again when a group is added (`add_param_group` after the first step)."""
        key = (id(optimizer), len(optimizer.param_groups), sum(len(g["params"]) for g in optimizer.param_groups))
        if key not in self._groups:
            self._groups[key] = [[p for p in group["params"] if id(p) in self._ids and p.requires_grad]
                                 for group in optimizer.param_groups]
        return self._groups[key]

    def _check_holds_gammas(self, optimizer) -> None:
        if any(self._gammas_by_group(optimizer)) or not self.gammas:
            return
        if not any(id(p) in self._ids for g in optimizer.param_groups for p in g["params"]):
            raise CompressError("the optimizer given to SparsityRegularizer.step holds none of the model's BN γ, "
                                "so the penalty would never reach them: give it the model's parameters")

    def close(self) -> None:
        """Remove the optimizer hooks: the proximal update, and the subgradient order check."""
        for handle in self._hooked.values():
            handle.remove()
        self._hooked.clear()
        self._groups.clear()

    def record(self) -> dict:
        """What to log per epoch: the setting and how polarized γ are."""
        out = {"sparsity_mode": self.mode, "sparsity_lambda": self.lam_at(max(self.step_index - 1, 0)),
               "sparsity_budget": self.budget, **polarization_of(self.gammas, self.percent)}
        if self.adaptive:
            out["sparsity_start_quantile"] = self.start_quantile
            out["sparsity_quantile_target"] = self.quantile_target(self.step_index) if self.start_quantile else None
            out["sparsity_lambda_base"] = self.lam
            out["sparsity_last_quantile"] = self._last_quantile
        return out


def polarization_of(gammas, percent: float = 0.5) -> dict:
    """How ready γ are for pruning `percent` of them by one global threshold.

    gamma_under_1e-3 / 1e-2: fractions of |γ| below those values. gamma_gap: smallest kept |γ| minus
    largest pruned |γ|, over the largest |γ| (large = a clean cut). gamma_pruned_max: largest pruned |γ|
    over the largest (near 0 = pruning removes only channels that already contribute nothing but β).
    """
    if isinstance(gammas, torch.Tensor):
        flat = gammas.detach().abs().flatten().float().cpu()
    else:
        parts = [g.detach().abs().flatten().float().cpu() for g in gammas]
        flat = torch.cat(parts) if parts else torch.zeros(0)
    out = {"gamma_under_1e-3": 0.0, "gamma_under_1e-2": 0.0, "gamma_gap": 0.0, "gamma_pruned_max": 0.0}
    if flat.numel() == 0:
        return out
    g = flat.sort().values
    top = float(g[-1]) or 1.0
    out["gamma_under_1e-3"] = float((g < 1e-3).float().mean())
    out["gamma_under_1e-2"] = float((g < 1e-2).float().mean())
    k = min(int(percent * g.numel()), g.numel() - 1)  # as slimming.global_threshold: keep g[k:]
    if k > 0:
        out["gamma_gap"] = float(g[k] - g[k - 1]) / top
        out["gamma_pruned_max"] = float(g[k - 1]) / top
    return out


def polarization(model: nn.Module, percent: float = 0.5) -> dict:
    """`polarization_of` the γ of every BN in `model`: how ready they are for pruning `percent` of them."""
    return polarization_of(bn_gammas(model), percent)


def param_groups(model: nn.Module, weight_decay: float, *, gamma_decay: bool = False,
                 beta_decay: bool = True) -> list[dict]:
    """Optimizer parameter groups: weight decay on everything except BN γ (and β with beta_decay=False).

    Weight decay shrinks every γ in proportion to its size; the L1 term is what should decide which
    channels die, so by default γ are left out of weight decay.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    exempt = set()
    if not gamma_decay:
        exempt |= {id(m.weight) for m in bns if m.weight is not None}
    if not beta_decay:
        exempt |= {id(m.bias) for m in bns if m.bias is not None}
    decayed, free = [], []
    for p in model.parameters():
        (free if id(p) in exempt else decayed).append(p)
    groups = [{"params": decayed, "weight_decay": weight_decay}]
    if free:
        groups.append({"params": free, "weight_decay": 0.0})
    return groups


@dataclass(frozen=True)
class SparsityConfig:
    """A regularizer's settings before the model and schedule exist (what `fit` and the CLI pass).

    `gamma_decay=False` removes BN γ from weight decay while this regularizer is on.
    """

    strength: Strength = "auto"
    mode: str = AUTO_MODE
    ramp: object = None
    gamma_decay: bool = False
    percent: float = 0.5

    def check_ready(self) -> None:
        """Refuse, before any data is loaded or file written, a config that cannot build (none here)."""

    def build(self, model: nn.Module, lrs: Sequence[float], input_size=None) -> SparsityRegularizer:
        """The regularizer for `model` over the schedule `lrs`; `input_size` (C, H, W) is for configs that
        trace the network (compress.sparsity_targeted)."""
        return SparsityRegularizer(model, self.strength, mode=self.mode, lrs=lrs, ramp=self.ramp,
                                   percent=self.percent)

    def describe(self) -> dict:
        s = self.strength
        steer = {"auto_rule": "goal-quantile controller"} if s == "auto" and self.mode == "proximal" else {}
        return {"mode": self.mode, "ramp": self.ramp, "gamma_decay": self.gamma_decay, "percent": self.percent,
                **({"budget": s.pull} if isinstance(s, Budget) else {"strength": s}), **steer}


def regularizer_for(sparsity, model: nn.Module, lrs: Sequence[float], input_size=None) -> SparsityRegularizer:
    """What `fit` uses: a float λ (the paper's subgradient), a SparsityConfig, or a ready regularizer."""
    if isinstance(sparsity, SparsityRegularizer):
        return sparsity
    if isinstance(sparsity, SparsityConfig):
        return sparsity.build(model, lrs, input_size=input_size)
    return SparsityRegularizer(model, float(sparsity or 0.0), mode="subgradient", lrs=lrs)


def optimizer_groups(model: nn.Module, weight_decay: float, sparsity) -> list[dict]:
    """`fit`'s parameter groups: γ leave weight decay only when a SparsityConfig asks for it."""
    keep = not isinstance(sparsity, SparsityConfig) or sparsity.gamma_decay
    return param_groups(model, weight_decay, gamma_decay=keep)
