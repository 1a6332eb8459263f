"""Pruning plans as objects: prune any ``nn.Module``, save the decision, load it, replay it.

A plan is data (see docs/ARTIFACTS.md, ``plan.json``): per channel group, the channels before and after,
the kept indices, the threshold and γ statistics. Replaying a plan on a fresh instance of the same
architecture removes exactly the recorded channels, whatever that instance's γ are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.request import PruneRequest, slimming_keywords


class Plan:
    """The pruning decision for one network; ``to_dict()`` is what ``plan.json`` holds."""

    def __init__(self, data: dict[str, Any]):
        """`data` is a plan's dict (what ``plan.json`` holds); one that cannot be a plan is refused here,
        not at the first property that misses a field."""
        if not isinstance(data, dict):
            raise CompressError(f"a plan is a JSON object, got {type(data).__name__}")
        self.data = data
        self.validate()

    @classmethod
    def _of(cls, data: dict[str, Any]) -> "Plan":
        """A plan that prune() has just written: already checked, and a bound meant for a stranger's file
        must not fail a prune that has changed the model."""
        plan = cls.__new__(cls)
        plan.data = data
        return plan

    # --- what it says -------------------------------------------------------------------------
    @property
    def percent(self) -> float | None:
        return self.data.get("percent")

    @property
    def threshold(self) -> float:
        return float(self.data["threshold"])

    @property
    def channels_before(self) -> int:
        return int(self.data["channels_before"])

    @property
    def channels_after(self) -> int:
        return int(self.data["channels_after"])

    @property
    def groups(self) -> list[dict]:
        return list(self.data["groups"])

    @property
    def check(self) -> dict | None:
        """The self-check that pruning ran (max_relative_difference against tolerance, the forwards it took);
        None for a plan written before there was one."""
        return self.data.get("check")

    def kept(self) -> dict[str, list[int]]:
        """Kept channel indices per group, keyed by the layer that defines the group."""
        return {g["root"]: list(g["kept"]) for g in self.data["groups"]}

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def __repr__(self) -> str:
        return (f"Plan({len(self.data.get('groups', []))} groups, channels {self.data.get('channels_before')} → "
                f"{self.data.get('channels_after')})")

    # --- files --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from compress.atomic import write_json

        path = Path(path)
        write_json(path, self.data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        from compress.limits import read_json

        path = Path(path)
        try:
            data = read_json(path)
        except FileNotFoundError:
            raise CompressError(f"plan not found: {path}") from None
        except OSError as exc:
            raise CompressError(f"cannot read plan {path}: {exc.strerror or exc}") from None
        if not isinstance(data, dict):
            raise CompressError(f"{path}: a plan is a JSON object, got {type(data).__name__}")
        plan = cls._of(data)
        plan.validate(source=str(path))
        return plan

    def validate(self, source: str = "plan") -> None:
        """Refuse a plan that cannot be right (wrong format, duplicate or non-integer indices, ...)."""
        from compress.validate import validate_plan

        validate_plan(self.data, where=source)

    # --- replay -------------------------------------------------------------------------------
    def apply(self, model: nn.Module, example_input: torch.Tensor, *, compensate: bool = True) -> nn.Module:
        """Remove the recorded channels from `model` (in place) and return it."""
        from compress.slimming import prune as _prune

        self.validate()
        model, _ = _prune(model, 0.0, example_input, compensate=compensate, plan=self.data)
        return model


def prune(model: nn.Module, example_input: torch.Tensor, request: PruneRequest | None = None, *,
          measure=None, log=None, **options) -> Plan:
    """Network slimming on any ``nn.Module``: remove channels in place, and return the :class:`Plan`. The
    model keeps its train/eval mode; where pruning is refused it is left as it was.

    `example_input` is one batch of the shape the model takes (e.g. ``torch.zeros(1, 3, 224, 224)``).
    What to prune to is a :class:`compress.request.PruneRequest`, or its fields as keywords (which replace
    the request's): ``percent=0.3`` sets one global threshold at that quantile of the scored channels' |γ|
    (a channel several BNs read is scored once; the floors keep some under it);
    ``target_macs=0.5`` / ``target_params=0.5`` keep that fraction of the cost; ``target_latency_ms=MS``
    (with ``backend="ort-cpu"``, ``batch``, ``iters``, ``warmup``, ``threads``) keeps the most MACs whose
    p50 latency, measured on this machine, is at most MS (compress.latency_budget; `measure` replaces the
    timer, `log` hears about each candidate). ``importance`` ranks channels: "gamma" (|γ|), "cost"
    (|γ| against each channel's share of a budget's cost), a callable ``importance(unit) -> scores`` or a
    Torch-Pruning ``Importance`` (compress.slimming.importance). ``min_keep`` (0.2) and ``min_channels`` (1)
    are each layer's floor; `round_to` rounds kept widths up to a multiple; ``"auto"`` is ONNX Runtime's
    CPU convolution block on this machine (16 with AVX-512, 8 with AVX2). ``shared`` is "select" (channel
    selections where several BNs read one tensor, the paper's way) or "narrow" (that tensor narrowed for
    every reader); ``compensate`` (True) folds the constant output of removed channels forward. Pruned
    layers get new parameters: build the optimizer (and a SparsityRegularizer) for fine-tuning afterwards.
    """
    if not isinstance(model, nn.Module):
        raise CompressError(f"prune needs an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise CompressError("example_input must be a tensor batch such as torch.zeros(1, 3, 224, 224)")
    request = PruneRequest.from_keywords(request, **options)
    if request.target is None:
        raise CompressError("give percent (a fraction of channels) or a budget such as target_macs=0.5")
    if request.target_latency_ms is not None:
        from compress.latency_budget import prune_to_latency

        _, data = prune_to_latency(model, example_input, request, measure=measure, log=log or (lambda _msg: None))
        return Plan._of(data)
    if measure is not None or log is not None:
        raise CompressError("measure and log time a latency target: give target_latency_ms")
    from compress.slimming import prune as prune_module

    _, data = prune_module(model, request.percent, example_input, target_macs=request.target_macs,
                           target_params=request.target_params, **slimming_keywords(request))
    return Plan._of(data)
