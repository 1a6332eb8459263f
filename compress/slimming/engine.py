"""Network slimming (Liu et al., ICCV 2017): global BN-γ threshold, physical channel removal, self-check.

`prune` reads the network's units from one traced forward (compress.slimming.units), decides what each
keeps (a global threshold over an importance, a budget, or a replayed plan), folds what removed channels
still emit into their consumers (compress.slimming.compensate), cuts every layer (surgery), and checks
the result against the unpruned network with the removed channels silenced (selfcheck). The caller's
model is pruned in place only when the check passes; on any failure it is restored as it was and the
error names the problem in one line.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, fields

import torch
from torch import nn

from compress.errors import CompressError
from compress.weights_file import refuse_nonfinite
from compress.measure import count_params_macs
from compress.request import SHARED, check_shared, importance_label
from compress.slimming import importance as imp
from compress.slimming.batchnorm import check_floor, global_threshold, quantile_threshold, resolve_round_to
from compress.slimming.decide import Chooser, apply_plan, check_round_to
from compress.slimming.restore import modes_of, objects_of, put_back, put_modes
from compress.slimming.refusals import (TIE_SLACK, refuse_floor_keeping_all, refuse_nothing_removed, refuse_ties,
                                       refuse_uncuttable, reparametrized_hint)
from compress.slimming.units import COMPENSATION_IMAGES, PruningUnits, probe_batch, pruning_units

PLAN_FORMAT = "compress.plan/2"
OLD_PLAN_FORMAT = "compress.plan/1"  # groups only; still replayable on models without selection sites
ATTEMPTS = 3  # a self-check failure leaves the units at the failing module alone and tries again, twice
HELD_OUT_SEED = 2  # the self-check's image: not one of the compensation probe's (seed 0)


@dataclass
class PruneOptions:
    """prune()'s keywords (see its docstring)."""

    min_keep: float = 0.2
    min_channels: int = 1
    round_to: int | str = 1
    compensate: bool = True
    plan: dict | None = None
    target_macs: float | None = None
    target_params: float | None = None
    cost_aware: bool = False
    importance: object = None
    shared: str = "select"

    def targets(self) -> dict:
        return {k: v for k, v in (("macs", self.target_macs), ("params", self.target_params)) if v is not None}


def prune(model: nn.Module, percent: float | None, example_input: torch.Tensor, **options) -> tuple[nn.Module, dict]:
    """Prune `model` in place: BN channels under one global threshold; returns the model and its plan.

    Keywords (PruneOptions): `min_keep` (fraction of each unit kept, 0.2), `min_channels` (1), `round_to`
    (kept widths rounded up to a multiple, or 'auto'), `compensate` (fold removed channels' constant
    output forward, True), `plan` (replay an earlier call's plan), `target_macs` / `target_params` (keep
    at most that fraction of the unpruned network's cost instead of `percent`), `importance` (None or
    'gamma' for |γ|, 'cost', a callable or a Torch-Pruning importance: compress.slimming.importance),
    `cost_aware` (alias of importance='cost'), `shared` (channels that several BNs read, such as a
    pre-activation ResNet's residual stream: "select" prunes them per reader with channel selections, the
    paper's way; "narrow" removes them from the shared tensor and every reader at once, scored by the mean
    |γ| of the readers, which leaves no gather in the deployed network; compress.slimming.units).
    The threshold is the `percent` quantile of every BN's |γ|; with a budget, the lowest one whose pruned
    network keeps at most the asked fraction (compress.budget). The plan records, per group and per
    selection, the channels before and after and the kept indices, what was left alone and why
    (`skipped`), and the self-check (`check`). The model comes back in the mode it came in (train or eval);
    on any failure it is left as it was.
    """
    from compress.slimming.other_inputs import untraced_runs

    opts, importance = _options(percent, options, "prune")
    refuse_uncuttable(model)
    refuse_nonfinite(model)  # every output NaN: the self-check would compare nothing and pass
    modes = modes_of(model)
    original = objects_of(model)  # what a failure puts back: the same modules, parameters and buffers
    model.eval()
    backup = copy.deepcopy(model)  # the reference of the self-check, and the values a failure restores
    try:
        untraced = untraced_runs(model, example_input)
        plan = _attempts(model, backup, percent, example_input, opts, importance, untraced)
    except CompressError:
        put_back(model, original, backup)
        raise
    except Exception as exc:
        put_back(model, original, backup)
        lines = str(exc).strip().splitlines()
        raise CompressError(f"pruning {type(model).__name__} failed ({type(exc).__name__}: "
                            f"{lines[0] if lines else ''}); the model is left unchanged"
                            f"{reparametrized_hint(model)}") from exc
    except BaseException:
        put_back(model, original, backup)
        raise
    put_modes(model, modes)  # each module in the mode it came in: pruning changes the channels, nothing else
    return model, plan


def _refuse_untraced(model: nn.Module, untraced, units: PruningUnits) -> None:
    """Refuse layers the eval trace missed: `untraced` is (modules run in training, {other input: modules
    run}) or None."""
    from compress.slimming.other_inputs import refuse_other_paths
    from compress.slimming.training_only import listed, not_in_trace

    in_training, elsewhere = untraced or (None, None)
    scopes = {node.scope for node in units.analysis.trace.nodes}
    found = not_in_trace(model, in_training, scopes)
    if found:
        raise CompressError(f"{type(model).__name__} runs {listed(found)} only in training mode: pruning follows "
                            "the eval forward, so they would keep their old widths and training would fail at its "
                            "first step; turn them off before pruning where the model allows it (torchvision's "
                            "GoogLeNet and Inception v3: model.aux_logits = False, and those modules set to None)")
    refuse_other_paths(model, elsewhere, scopes)


def _options(percent, options: dict, caller: str) -> tuple[PruneOptions, object]:
    """`options` (PruneOptions field names) checked as `prune` takes them; returns them and the importance."""
    unknown = sorted(set(options) - {f.name for f in fields(PruneOptions)})
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    opts = PruneOptions(**options)
    targets = opts.targets()
    if len(targets) > 1:
        raise CompressError("give target_macs or target_params, not both")
    if opts.plan is None and not targets and not (percent is not None and 0.0 < percent < 1.0):
        raise CompressError(f"percent must be in (0, 1), got {percent}")
    importance = imp.resolve(opts.importance, opts.cost_aware)
    if importance == "cost" and not targets and opts.plan is None:
        raise CompressError("cost_aware importance needs a budget: target_macs or target_params")
    check_shared(opts.shared)  # before the plan's comparison, so a misspelt mode is named as one
    if opts.plan is not None:
        made = opts.plan.get("shared", "select")
        if made not in SHARED:
            raise CompressError(f"the plan's shared is {made!r}; a plan is made with one of {', '.join(SHARED)}")
        if opts.shared != "select" and opts.shared != made:
            raise CompressError(f"the plan was made with shared={made!r}, and a plan replays its own channels: "
                                f"drop shared={opts.shared!r} or decide afresh without the plan")
        opts.shared = made  # a plan is replayed on the units it was made for
    opts.round_to = resolve_round_to(opts.round_to)
    check_floor(round_to=opts.round_to, min_channels=opts.min_channels)
    return opts, importance


def _attempts(model, backup, percent, example_input, opts: PruneOptions, importance, untraced=None) -> dict:
    """Prune; where the self-check finds the network changed at a module, leave the units whose channels
    pass that module alone and prune the rest (a decision replayed from a plan is never altered)."""
    from compress.slimming.compensate import CompensationError
    from compress.slimming.selfcheck import SelfCheckError

    excluded: dict[str, str] = {}
    for attempt in range(ATTEMPTS):
        try:
            return _prune(model, backup, percent, example_input, opts, importance, excluded, untraced)
        except (SelfCheckError, CompensationError) as exc:
            compensation = isinstance(exc, CompensationError)
            found = _units_at(exc.units, exc.module, read_only=compensation)
            names = set() if opts.plan is not None or attempt == ATTEMPTS - 1 else found - excluded.keys()
            if not names:
                raise
            _restore(model, copy.deepcopy(backup))
            why = (f"their removed channels reach {exc.module} as no one constant ({exc.short})" if compensation
                   else f"pruning them changed the network at {exc.module} (self-check)")
            excluded.update(dict.fromkeys(names, why))
    raise AssertionError("unreachable")


def _units_at(units, module: str | None, *, read_only: bool = False) -> set[str]:
    """The units whose channels are read or made inside `module`; with `read_only`, those the layer
    `module` itself reads (its own output channels may still go)."""
    if not module or units is None:
        return set()
    analysis = units.analysis
    touched: set[int] = set()
    for node in analysis.trace.nodes:
        if node.scope == module or (not read_only and node.scope.startswith(module + ".")):
            for v in node.inputs if read_only else [*node.inputs, *node.outputs]:
                touched.update(analysis.classes_of(v).tolist())
    return {_name(u) for u in [*units.groups, *units.selections] if set(u.class_of.tolist()) & touched}


def _name(unit) -> str:
    return unit.root_name if hasattr(unit, "root_name") else unit.name


def _exclude(units: PruningUnits, excluded: dict[str, str], model: nn.Module) -> None:
    for kind in ("groups", "selections"):
        kept = []
        for u in getattr(units, kind):
            if _name(u) in excluded:
                units.skipped.append({"layers": [_name(u)], "channels": int(u.scores.numel()), "reason": excluded[_name(u)]})
            else:
                kept.append(u)
        setattr(units, kind, kept)
    if not units.groups and not units.selections:
        raise CompressError(f"{type(model).__name__} has no BatchNorm channels left to prune "
                            f"({next(iter(excluded.values()))})")


def _restore(model: nn.Module, backup: nn.Module) -> None:
    """Put the unpruned layers back into `model` (the same object; its own hooks stay)."""
    model.__dict__.update({k: v for k, v in backup.__dict__.items() if "hook" not in k})


def prunable_units(model: nn.Module, example_input: torch.Tensor, probe: torch.Tensor | None = None, *,
                   shared: str = "select") -> PruningUnits:
    """pruning_units, refusing a network that gives slimming nothing to act on."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise CompressError(f"{type(model).__name__} has no BatchNorm2d layers: network slimming prunes by "
                            "BatchNorm γ, so the network needs BatchNorm after its convolutions")
    units = pruning_units(model, example_input, probe, shared=shared)
    if not units.groups and not units.selections:
        why = f" ({units.skipped[0]['reason']})" if units.skipped else ""
        raise CompressError(f"{type(model).__name__} has no BatchNorm channels to prune{why}")
    return units


def _prune(model, backup, percent, example_input, opts: PruneOptions, importance, excluded: dict,
           untraced=None) -> dict:
    from compress.slimming.compensate import CompensationError, fold_deltas, measure_deltas
    from compress.slimming.float64_check import applied_deltas
    from compress.slimming.other_inputs import larger_input
    from compress.slimming.removal import removal_of
    from compress.slimming.selfcheck import SelfCheckError, self_check
    from compress.slimming.surgery import apply_removal

    started = time.perf_counter()
    probe = probe_batch(example_input)
    units = prunable_units(model, example_input, probe, shared=opts.shared)
    _refuse_untraced(model, untraced, units)
    if excluded:
        _exclude(units, excluded, model)
    if opts.plan is None:
        check_round_to(units, opts.round_to)
    if not isinstance(importance, str):
        imp.scores_of(importance, units, model)
    threshold, budget, percent = _decide(model, units, percent, example_input, opts, importance,
                                         floor_check=not excluded)
    removal = removal_of(units)
    # The constants are means over the probe: eight images average a not-quite-constant channel (an SE
    # gate) better than two, and give the same float sums as plans made before the engine traced itself.
    constants_probe = probe_batch(example_input, COMPENSATION_IMAGES)
    try:
        deltas = measure_deltas(model, removal, constants_probe) if opts.compensate else {}
    except CompensationError as exc:
        exc.units = units
        raise
    folded = fold_deltas(model, units.analysis, deltas)
    applied = applied_deltas(model, backup, folded)
    gone_gamma = _removed_gamma_max(model, removal)
    group_records = [_record(g, threshold, {"root": g.root_name, "bn_layers": g.bn_names}) for g in units.groups]
    selection_records = [_record(s, threshold, {"bn": s.name, "consumer": s.site.consumer_name,
                                                "input_channels": s.site.in_channels}) for s in units.selections]
    apply_removal(model, units, removal)
    modules = dict(model.named_modules())
    for s, rec in zip(units.selections, selection_records):
        s.site.bn = modules[s.name]
        rec["selected"] = s.site.selected()
    # One image is enough to see a changed function; the doubled reference batch makes it two forwards,
    # and the float64 look two more, on copies. Both images are outside the constants' fit, so that
    # `approximation` is what compensation gives up on inputs it did not see (two forwards more).
    try:
        check = self_check(model, backup, removal, deltas, probe_batch(example_input, 1, seed=HELD_OUT_SEED),
                           compensate=opts.compensate, folded=folded, applied=applied,
                           elsewhere=larger_input(example_input))
    except SelfCheckError as exc:
        exc.units = units
        raise
    if budget is not None and opts.plan is None:
        params, macs = count_params_macs(model, tuple(example_input.shape[1:]))
        budget["met"] = (macs if budget["target"] == "macs" else params) / budget["full"]
    plan = _plan(opts, percent, threshold, group_records, selection_records, budget, units, check, importance,
                 time.perf_counter() - started)
    plan["removed_gamma_max"] = gone_gamma
    return plan


def _removed_gamma_max(model: nn.Module, removal) -> float:
    """The largest |γ| among the removed BN channels, and |w| among the input weights that gate them
    where a layer reads them without a BN: under 1e-3 or so, pruning changed nothing, whatever the
    importance that chose them."""
    modules = dict(model.named_modules())
    worst = 0.0
    for name, idx in removal.bn.items():
        bn = modules[name]
        if bn.affine and idx:
            worst = max(worst, float(bn.weight.detach()[torch.as_tensor(idx, device=bn.weight.device)].abs().max()))
    for name, idx in removal.raw.items():
        w = modules[name].weight.detach()
        worst = max(worst, float(w[:, torch.as_tensor(idx, device=w.device)].abs().max()))
    return worst


def _decide(model, units: PruningUnits, percent, example_input, opts: PruneOptions, importance, *,
            floor_check: bool = True, tie_check: bool = True):
    """Set every unit's kept channels; returns (threshold, budget record or None, percent recorded).
    `floor_check` False: units were left alone after a failed self-check (the plan says why), and the rest
    may all sit at their floor. `tie_check` False: a preview, which a sparse stage takes of γ as initialized."""
    chooser = Chooser(units, min_keep=opts.min_keep, min_channels=opts.min_channels, round_to=opts.round_to)
    if opts.plan is not None:
        return apply_plan(units, opts.plan), opts.plan.get("budget"), opts.plan["percent"]
    targets = opts.targets()
    if targets:
        target, fraction = next(iter(targets.items()))
        threshold, budget = _meet_budget(model, units, example_input, target, fraction, importance,
                                         opts.compensate, chooser)
        if tie_check and budget["estimated"] < fraction - TIE_SLACK:
            refuse_ties(units, threshold, f"target_{target} {fraction:g}",
                         f"keep {budget['estimated']:.3f} of the {target}")
        return threshold, budget, None
    if floor_check:
        refuse_floor_keeping_all(units, chooser, percent)
    every = [*units.groups, *units.selections]
    threshold = global_threshold(model, percent) if importance == "gamma" else \
        quantile_threshold([u.importance for u in every], percent)
    for unit in every:
        unit.keep = chooser(unit, unit.scores if unit.importance is None else unit.importance, threshold)
    removed = sum(u.scores.numel() - len(u.keep) for u in every) / max(1, sum(u.scores.numel() for u in every))
    if tie_check and removed > percent + TIE_SLACK:
        refuse_ties(units, threshold, f"percent {percent:g}", f"remove {removed:.1%} of the channels")
    if floor_check and tie_check:
        refuse_nothing_removed(percent, threshold, removed, every_bn=importance == "gamma")
    return threshold, None, percent


def _budget_scores(units: PruningUnits, costs, target: str, importance):
    from compress.budget import cost_aware_scores

    if importance == "cost":
        group_scores, selection_scores = cost_aware_scores(costs, target)
        for unit, score in zip([*units.groups, *units.selections], [*group_scores, *selection_scores]):
            unit.importance = score
    score_of = lambda u: u.scores if u.importance is None else u.importance  # noqa: E731
    return [score_of(g) for g in units.groups], [score_of(s) for s in units.selections]


def _meet_budget(model, units, example_input, target: str, fraction: float, importance, compensate: bool,
                 chooser: Chooser) -> tuple[float, dict]:
    """Set every unit's kept channels to meet the budget; returns the threshold and the budget record."""
    from compress.budget import CostModel, search_threshold

    costs = CostModel(model, units, example_input, compensate=compensate)
    scores = _budget_scores(units, costs, target, importance)
    threshold, found = search_threshold(costs, target, fraction, chooser, scores)
    group_keeps, selection_keeps = found["keeps"]
    for unit, keep in zip([*units.groups, *units.selections], [*group_keeps, *selection_keeps]):
        unit.keep = keep
    shown = f"|γ| / {target} share" if importance == "cost" else importance_label(importance)
    return threshold, {"target": target, "asked": fraction, "full": costs.full[target],
                       "estimated": found["estimate"][target] / costs.full[target], "importance": shown}


def least_budget(model: nn.Module, example_input: torch.Tensor, target: str = "macs", *, min_keep: float = 0.2,
                 min_channels: int = 1, round_to: int = 1, compensate: bool = True,
                 cost_aware: bool = False, importance=None, shared: str = "select") -> float:
    """The smallest `target_{target}` fraction that pruning to a budget accepts: every unit at its floor.

    Half a MAC (or parameter) above the floor's cost, so that the float round trip cannot refuse the
    floor itself while nothing larger fits (costs are integers). 1.0 or more: nothing can be pruned.
    """
    from compress.budget import CostModel

    round_to = resolve_round_to(round_to)
    check_floor(round_to=round_to, min_channels=min_channels)
    refuse_uncuttable(model)
    modes = modes_of(model)
    model.eval()
    try:
        units = prunable_units(model, example_input, probe_batch(example_input), shared=shared)
        costs = CostModel(model, units, example_input, compensate=compensate)
        chooser = Chooser(units, min_keep=min_keep, min_channels=min_channels, round_to=round_to)
        keeps = tuple([chooser(u, u.scores, math.inf) for u in us] for us in (units.groups, units.selections))
        return (costs.cost(keeps)[target] + 0.5) / costs.full[target]
    finally:
        put_modes(model, modes)


def _record(unit, threshold: float, names: dict) -> dict:
    s = unit.scores
    n = s.numel()
    below = int(((s if unit.importance is None else unit.importance) <= threshold).sum())
    removed = n - len(unit.keep)
    rec = {
        **names,
        "channels_before": n,
        "channels_after": len(unit.keep),
        "below_threshold": below,
        "floor_applied": below > removed,
        "kept": unit.keep,
        "gamma": {"min": float(s.min()), "max": float(s.max()), "mean": float(s.mean()),
                  "median": float(s.median())},
    }
    left_alone = int((~unit.free).sum())
    if left_alone:
        rec["left_alone"] = left_alone
    return rec


def _plan(opts: PruneOptions, percent, threshold, group_records, selection_records, budget, units, check,
          importance, seconds: float) -> dict:
    records = group_records + selection_records
    before = sum(r["channels_before"] for r in records)
    after = sum(r["channels_after"] for r in records)
    plan = opts.plan
    new_plan = {
        "format": PLAN_FORMAT,
        "percent": plan["percent"] if plan else percent,
        "threshold": threshold,
        "min_keep": plan.get("min_keep", opts.min_keep) if plan else opts.min_keep,
        "min_channels": opts.min_channels,
        "round_to": opts.round_to,
        "compensated": opts.compensate,
        "importance": importance_label(importance),
        "shared": opts.shared,
        "channels_before": before,
        "channels_after": after,
        "pruned_fraction": 1 - after / before,
        "groups": group_records,
        "selections": selection_records,
        "skipped": units.skipped,
        "split_sizes": _split_records(units),
        "check": check,
        "seconds": round(seconds, 3),
    }
    if budget is not None:
        new_plan["budget"] = budget
    return new_plan


def _split_records(units: PruningUnits) -> list[dict]:
    """Split sizes rewritten in module attributes (they are not widths: a model directory must record them)."""
    from compress.slimming.removal import removal_of

    sizes = removal_of(units).split_sizes
    return [{"module": b.module_name, "attribute": b.attribute, "sizes": sizes[id(b.split)]}
            for b in units.analysis.split_bindings
            if b.attribute is not None and sizes[id(b.split)] != [len(p) for p in b.split.parts]]


def removal_preview(model: nn.Module, percent: float | None, example_input: torch.Tensor, *,
                    training_only_check: bool = False, **options) -> dict[str, list[int]]:
    """The BN channels (module name → indices) that `prune(model, percent, example_input, **options)` would
    remove now, decided the same way, without removing anything or checking the result; with
    shared="narrow", also the input channels of the layers whose weights gate them (a projection shortcut
    reading the raw stream: their weight columns must reach zero as the γ do). The model's
    weights and train/eval mode are left as they were: what a sparsity penalty aimed at the channels a
    later prune removes reads during training (compress.sparsity_targeted). With `training_only_check`,
    layers that run only in training are refused here as `prune` would refuse them (one forward more), so
    that a sparse stage aimed at a prune is not trained for nothing."""
    from compress.slimming.other_inputs import untraced_runs
    from compress.slimming.removal import removal_of

    if options.get("plan") is not None:
        raise CompressError("removal_preview decides afresh; a plan already says what it removes")
    opts, importance = _options(percent, options, "removal_preview")
    refuse_uncuttable(model)
    untraced = untraced_runs(model, example_input) if training_only_check else None
    modes = modes_of(model)
    model.eval()
    try:
        with torch.no_grad():
            units = prunable_units(model, example_input, probe_batch(example_input), shared=opts.shared)
            _refuse_untraced(model, untraced, units)
            if not isinstance(importance, str):
                imp.scores_of(importance, units, model)
            _decide(model, units, percent, example_input, opts, importance, tie_check=False)
            removal = removal_of(units)
            return {**removal.bn, **removal.raw}
    finally:
        put_modes(model, modes)


def zero_removed_channels(model: nn.Module, plan: dict, example_input: torch.Tensor, *, beta: bool) -> None:
    """Set γ (and β when `beta`) of every BN channel that `plan` removes, without removing it, and the
    input weights that gate a removed channel where a layer reads it without a BN (shared="narrow").

    The unpruned network treated this way computes what the pruned one must: the reference for
    exactness checks. For a selection the BN's removed channels then emit ReLU(0) = 0 (ReLU(β) with
    `beta` false) to its one consumer, which is what dropping them for that consumer means.
    """
    from compress.slimming.compensate import silence
    from compress.slimming.removal import removal_of

    units = pruning_units(model, example_input, probe_batch(example_input), shared=plan.get("shared", "select"))
    apply_plan(units, plan)
    removal = removal_of(units)
    silence(model, removal.bn, beta=beta, raw=removal.raw)
