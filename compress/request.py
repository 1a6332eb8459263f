"""What to prune to, as one typed request: checked once, put into words once.

A `PruneRequest` holds at most one target: `percent` (a fraction of BN channels under one global |γ|
threshold), `target_macs` / `target_params` (the fraction of the unpruned cost to keep) or
`target_latency_ms` (a p50 latency measured on `backend` at `batch`, compress.latency_budget); the
floor every layer keeps (`min_keep`, `min_channels`, `round_to`); β compensation; and the importance
that ranks channels: "gamma" (|γ|, the default), "cost" (|γ| against each channel's share of the
target's cost) or a callable (compress.slimming.importance says what it receives; a Torch-Pruning
`Importance` plugs in too); and `shared`, how channels that several BNs read are pruned: "select"
(per reader, with channel selections: the paper's way) or "narrow" (removed from the shared tensor
itself and every reader at once, scored by the readers' mean |γ|; no gather in the deployed network). A
request without a target is legal only where a plan is replayed.

This module imports no torch, so the CLI can build and check a request before loading anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Callable, Mapping

from compress.errors import CompressError

TARGETS = ("percent", "target_macs", "target_params", "target_latency_ms")
IMPORTANCES = ("gamma", "cost")
SHARED = ("select", "narrow")  # how channels that several BNs read are pruned (compress.slimming.units)
DEFAULT_BACKEND = "ort-cpu"
COST = "importance='cost'"  # how a conflict names the cost-aware importance


class RequestConflict(CompressError):
    """Options that exclude or need each other. The message names them as keywords; `spelled(names)`
    words it again with another spelling of the same options (the CLI's --flags)."""

    def __init__(self, template: str, *options: str):
        self.template, self.options = template, options
        super().__init__(self.spelled())

    def spelled(self, names: Mapping[str, str] | None = None) -> str:
        names = names or {}
        return self.template.format(*(names.get(o, o) for o in self.options))


def _targets_phrase() -> str:
    return "give one of {0}, {1}, {2} or {3}"


@dataclass(frozen=True)
class PruneRequest:
    """A pruning request; see the module docstring. Values are checked when it is made."""

    percent: float | None = None
    target_macs: float | None = None
    target_params: float | None = None
    target_latency_ms: float | None = None
    backend: str | None = None  # latency only: ort-cpu when not given
    batch: int = 1
    iters: int = 100
    warmup: int = 10
    threads: int | None = None
    steps: int = 6
    min_keep: float = 0.2
    min_channels: int = 1
    round_to: int | str = 1
    compensate: bool = True
    importance: str | Callable = "gamma"
    shared: str = "select"

    def __post_init__(self):
        given = [name for name in TARGETS if getattr(self, name) is not None]
        if len(given) > 1:
            raise RequestConflict(_targets_phrase() + ", not {4} and {5}", *TARGETS, *given[:2])
        if self.backend is not None and self.target_latency_ms is None:
            raise RequestConflict("{0} says what {1} is measured with; give {1}", "backend", "target_latency_ms")
        if self.importance == "cost" and self.percent is not None:
            raise RequestConflict("{0} needs a budget: {1}, {2} or {3}", COST, *TARGETS[1:])
        _check_values(self)

    # --- what it asks ----------------------------------------------------------------------------
    @property
    def target(self) -> str | None:
        """The one target given (a name in TARGETS), or None (a plan replay)."""
        return next((name for name in TARGETS if getattr(self, name) is not None), None)

    def require_target(self) -> str:
        if self.target is None:
            raise RequestConflict(_targets_phrase(), *TARGETS)
        return self.target

    @property
    def latency_backend(self) -> str:
        return self.backend or DEFAULT_BACKEND

    def with_round_to(self, round_to: int) -> PruneRequest:
        return replace(self, round_to=round_to)

    @classmethod
    def from_keywords(cls, request: PruneRequest | None = None, **options) -> PruneRequest:
        """`request` with `options` (PruneRequest field names) replacing its fields; unknown names are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            hint = "; cost_aware=True is importance='cost'" if "cost_aware" in unknown else ""
            raise CompressError(f"unknown pruning option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
                                f"{hint} (a PruneRequest takes {', '.join(sorted(known))})")
        if request is None:
            return cls(**options)
        if not isinstance(request, cls):
            raise CompressError(f"request must be a PruneRequest, got {type(request).__name__}")
        if any(options.get(name) is not None for name in TARGETS):
            # A target given as a keyword replaces the request's target, whichever field that was in.
            options = {**{name: None for name in TARGETS}, **options}
        return replace(request, **options) if options else request

    # --- in words, and as plan.json records it -----------------------------------------------------
    def text(self) -> str:
        """The target in a few words, for a log line: '50% of channels', 'p50 latency 2 ms on ort-cpu'."""
        target = self.require_target()
        if target == "percent":
            return f"{self.percent:.0%} of channels"
        if target == "target_latency_ms":
            return f"p50 latency {self.target_latency_ms:g} ms on {self.latency_backend}"
        return f"{target.replace('_', ' ')} {getattr(self, target):g}"

    def recorded(self) -> dict | None:
        """The budget in the terms plan.json records it (None for a percent), for comparing the two on resume.
        A latency plan made on another machine matches: its structure was measured there, as it says."""
        target = self.require_target()
        if target == "percent":
            return None
        if target == "target_latency_ms":
            return {"target": "latency_ms", "asked": self.target_latency_ms, "backend": self.latency_backend}
        return {"target": target.removeprefix("target_"), "asked": getattr(self, target)}

    def matches(self, plan: dict) -> bool:
        """Whether `plan` (plan.json) was made for this request: target, floor, rounding (resolved),
        compensation and importance (a plan that does not record one of these was made with its default)."""
        return not self.differences(plan)

    def differences(self, plan: dict) -> list[str]:
        """What `plan` was made with that this request asks otherwise, as "field recorded → asked" words."""
        pairs = [("min_keep", plan.get("min_keep"), self.min_keep), ("round_to", plan.get("round_to"), self.round_to),
                 ("shared", plan.get("shared", "select"), self.shared),
                 ("min_channels", plan.get("min_channels", 1), self.min_channels),
                 ("compensate", plan.get("compensated", True), self.compensate),
                 ("importance", plan.get("importance", "|γ|"), importance_label(self.importance))]
        recorded = self.recorded()
        if recorded is None:
            pairs += [("budget", plan.get("budget"), None), ("percent", plan.get("percent"), self.percent)]
        else:
            budget = plan.get("budget") or {}
            pairs += [(key, budget.get(key), value) for key, value in recorded.items()]
        return [f"{name} {was} → {asked}" for name, was, asked in pairs if was != asked]


def importance_label(importance) -> str:
    """How a plan records an importance: |γ|, cost, or a callable's (or Torch-Pruning class's) name."""
    if importance in (None, "gamma"):
        return "|γ|"
    if importance == "cost":
        return "cost"
    return getattr(importance, "__name__", type(importance).__name__)


def slimming_keywords(request: PruneRequest) -> dict:
    """The floor and importance of `request` as compress.slimming.prune (and least_budget) take them."""
    return {"min_keep": request.min_keep, "min_channels": request.min_channels, "round_to": request.round_to,
            "compensate": request.compensate, "importance": request.importance, "shared": request.shared}


def _check_values(r: PruneRequest) -> None:
    if r.percent is not None and not (_real(r.percent) and 0.0 < r.percent < 1.0):
        raise CompressError(f"percent must be in (0, 1), got {r.percent!r}")
    for name in ("target_macs", "target_params"):
        value = getattr(r, name)
        if value is not None and not (_real(value) and 0.0 < value < 1.0):
            raise CompressError(f"{name} must be a fraction in (0, 1), got {value!r}")
    if r.target_latency_ms is not None and not (_real(r.target_latency_ms) and r.target_latency_ms > 0):
        raise CompressError(f"target latency must be a positive number of milliseconds, got {r.target_latency_ms!r}")
    if not (_real(r.min_keep) and 0.0 <= r.min_keep <= 1.0):
        raise CompressError(f"min_keep must be in [0, 1], got {r.min_keep!r}")
    if not _whole(r.min_channels) or r.min_channels < 1:
        raise CompressError(f"min_channels must be >= 1, got {r.min_channels!r}")
    if r.round_to != "auto":
        if not _whole(r.round_to):
            raise CompressError(f"round_to must be a whole number >= 1 or 'auto', got {r.round_to!r}")
        if r.round_to < 1:
            raise CompressError(f"round_to must be >= 1, got {r.round_to}")
    if not isinstance(r.compensate, bool):
        raise CompressError(f"compensate must be True or False, got {r.compensate!r}")
    if not (callable(r.importance) or (isinstance(r.importance, str) and r.importance in IMPORTANCES)):
        raise CompressError(f"importance must be one of {', '.join(IMPORTANCES)} or a callable, got {r.importance!r}")
    check_shared(r.shared)


def check_shared(value) -> str:
    """`value` if it is one of SHARED; otherwise a CompressError naming the choices."""
    if value not in SHARED:
        raise CompressError(f"shared must be one of {', '.join(SHARED)}, got {value!r}")
    return value


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
