"""Which channels each unit keeps: one global threshold, a floor, rounding, and what the graph demands.

A unit's channels are decided per class (a grouped convolution's runs share positions, so one class
holds one root channel of each run). Channels this code leaves alone count as kept. After the threshold,
the floor and the rounding, two demands of the graph are met by keeping more: every tensor made of one
unit's channels keeps at least one (no layer is ever left with zero channels), and a split into equal
parts (`chunk`) keeps equal parts.
"""

from __future__ import annotations

import math

import torch

from compress.errors import CompressError


def floor_channels(n: int, min_keep: float, min_channels: int) -> int:
    return min(n, max(min_channels, math.ceil(min_keep * n)))


def choose_kept(scores: torch.Tensor, threshold: float, *, min_keep: float, min_channels: int,
                round_to: int, conv_groups: int = 1) -> list[int]:
    """Indices kept in one unit: those above the threshold, topped up to the floor and rounding.

    With `conv_groups` g > 1 the channels are g equal runs that must keep the same positions: a
    position is scored by the mean |γ| of its channels across the runs (as torch-pruning's own grouped
    importance does; the maximum kept almost every position of a 32-group ResNeXt), and kept or removed
    in all of them."""
    if conv_groups > 1:
        period = scores.numel() // conv_groups
        positions = choose_kept(scores.view(conv_groups, period).mean(dim=0), threshold, min_keep=min_keep,
                                min_channels=max(1, -(-min_channels // conv_groups)),
                                round_to=max(1, round_to // math.gcd(round_to, conv_groups)))
        return sorted(j * period + p for j in range(conv_groups) for p in positions)
    n = scores.numel()
    n_keep = int((scores > threshold).sum())
    n_keep = max(n_keep, floor_channels(n, min_keep, min_channels))
    if round_to > 1:
        n_keep = min(n, int(math.ceil(n_keep / round_to) * round_to))
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(int(i) for i in order[:n_keep])


class Chooser:
    """Picks a unit's kept root channels from its scores, meeting the floor and the graph's demands."""

    def __init__(self, units, *, min_keep: float, min_channels: int, round_to: int):
        self.units = units
        self.floor = dict(min_keep=min_keep, min_channels=min_channels, round_to=round_to)

    def __call__(self, unit, scores: torch.Tensor, threshold: float) -> list[int]:
        runs = getattr(unit, "conv_groups", 1)
        free = unit.free
        # Channels left alone always stay: they take part in the floor as kept channels.
        masked = torch.where(free, scores.float(), torch.full_like(scores.float(), math.inf))
        kept = choose_kept(masked, threshold, conv_groups=runs, **self.floor)
        return self.demands(unit, masked, kept)

    def demands(self, unit, scores: torch.Tensor, kept: list[int]) -> list[int]:
        classes = unit.class_of.tolist()
        kept_classes = {classes[i] for i in kept}
        best = {}  # class -> its score (the largest over its root channels)
        for i, c in enumerate(classes):
            best[c] = max(best.get(c, -math.inf), float(scores[i]))
        rank = lambda c: -best.get(c, -math.inf)  # noqa: E731
        for parts in self.units.equal_parts.get(id(unit), ()):
            # Equal parts keep as many as the part that kept most, each its best channels. Never fewer: the
            # mean count (before 2026-12-07) removed channels above the threshold from the fuller part, and
            # a CSP network's output moved by 4.6% at a threshold of zero, with the self-check passing.
            target = max(1, *(len(p & kept_classes) for p in parts),
                         *(sum(best.get(c) == math.inf for c in p) for p in parts))
            for p in parts:
                kept_classes.update(sorted(p, key=rank)[:target])
        for segment in self.units.segments.get(id(unit), ()):
            if not segment & kept_classes:
                kept_classes.add(min(segment, key=rank))
        for _ in range(4):  # adding to one part can add to another that shares a class; settle
            changed = False
            for parts in self.units.equal_parts.get(id(unit), ()):
                target = max(len(p & kept_classes) for p in parts)
                for p in parts:
                    missing = sorted(p - kept_classes, key=lambda c: -best.get(c, -math.inf))
                    extra = missing[:target - len(p & kept_classes)]
                    changed |= bool(extra)
                    kept_classes.update(extra)
            if not changed:
                break
        return [i for i, c in enumerate(classes) if c in kept_classes]


def check_round_to(units, round_to: int) -> None:
    """Refuse a rounding no unit could honour: it would silently prune nothing."""
    widths = [u.scores.numel() for u in [*units.groups, *units.selections]]
    if widths and round_to > max(widths):
        raise CompressError(f"round_to {round_to} (--round-to) is larger than every prunable unit (the widest has "
                            f"{max(widths)} channels): nothing could be pruned; use a round_to of at most {max(widths)}")


def apply_plan(units, plan: dict) -> float:
    """Set every unit's kept channels from `plan` (validated); returns the plan's threshold."""
    from compress.validate import validate_plan

    validate_plan(plan, where="plan")  # refused, never cast: indices must already be integers
    by_root = {r["root"]: r for r in plan["groups"]}
    by_bn = {r["bn"]: r for r in plan.get("selections", [])}
    left_alone = _left_alone(plan)
    used = _replay_groups(units, by_root, left_alone)
    _replay(units.selections, by_bn, lambda s: s.name, "channel selection at", left_alone)
    extra = set(by_root) - used
    if extra:
        raise CompressError(f"plan names layer layers the model lacks: {', '.join(sorted(extra)[:3])}")
    for unit in [*units.groups, *units.selections]:
        classes = unit.class_of.tolist()
        kept, keep = {classes[i] for i in unit.keep}, set(unit.keep)
        if any(classes[i] in kept for i in range(len(classes)) if i not in keep):
            raise CompressError(f"plan keeps only part of channels that must go together at "
                                f"{getattr(unit, 'root_name', getattr(unit, 'name', '?'))}")
        if bool((~unit.free[[i for i in range(len(classes)) if classes[i] not in kept]]).any()):
            raise CompressError(f"plan removes channels of {getattr(unit, 'root_name', getattr(unit, 'name', '?'))} "
                                "that this version leaves alone (see the plan's skipped list)")
    return float(plan["threshold"])


def _left_alone(plan: dict) -> set[str]:
    """The units a plan's `skipped` names: a prune that the self-check or compensation made leave some
    units alone records them there only, and replaying it keeps their channels."""
    skipped = plan.get("skipped")
    names = set()
    for entry in skipped if isinstance(skipped, list) else ():
        layers = entry.get("layers") if isinstance(entry, dict) else None
        names.update(n for n in (layers if isinstance(layers, list) else ()) if isinstance(n, str))
    return names


def _replay_groups(units, records: dict, left_alone: set[str] = frozenset()) -> set:
    """Match each group to its record by root, or by another layer making the same channels (plans
    written by older versions named a group by another of its layers)."""
    used = set()
    for g in units.groups:
        rec, translate = records.get(g.root_name), None
        if rec is None:
            rec, translate = _record_by_member(units, g, records)
        if rec is None and g.root_name in left_alone:
            g.keep = list(range(g.scores.numel()))
            continue
        if rec is None:
            raise CompressError(f"plan has no entry for layer {g.root_name}; was it made for another model "
                                f"or by an older version?")
        used.add(rec["root"])
        _check_record(g, rec, g.root_name if translate is None else rec["root"],
                      len(translate) if translate is not None else g.scores.numel())
        if translate is None:
            g.keep = sorted(rec["kept"])
        else:
            kept_classes = {translate[i] for i in rec["kept"]}
            g.keep = [i for i, c in enumerate(g.class_of.tolist()) if c in kept_classes]
    return used


def _record_by_member(units, g, records: dict):
    analysis = units.analysis
    for name, rec in records.items():
        layer = analysis.layers.get(name)
        if layer is None or layer.kind not in ("conv", "linear", "grouped", "depthwise"):
            continue
        cls = analysis.classes_of(layer.out_value).tolist()
        if set(cls) == set(g.class_of.tolist()):
            return rec, cls
    return None, None


def _check_record(unit, rec: dict, name: str, n: int) -> None:
    if rec["channels_before"] != n:
        raise CompressError(f"plan says {name} has {rec['channels_before']} channels, the model has {n}")
    if any(not 0 <= i < n for i in rec["kept"]) or not rec["kept"]:
        raise CompressError(f"plan keeps invalid channel indices for {name}")


def _replay(units, records: dict, name_of, what: str, left_alone: set[str] = frozenset()) -> None:
    for unit in units:
        name = name_of(unit)
        rec = records.get(name)
        n = unit.scores.numel()
        if rec is None and name in left_alone:
            unit.keep = list(range(n))
            continue
        if rec is None:
            raise CompressError(f"plan has no entry for {what} {name}; was it made for another model "
                                f"or by an older version?")
        _check_record(unit, rec, name, n)
        unit.keep = sorted(rec["kept"])
    extra = set(records) - {name_of(u) for u in units}
    if extra:
        raise CompressError(f"plan names {what} layers the model lacks: {', '.join(sorted(extra)[:3])}")
