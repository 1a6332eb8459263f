"""Ablation variants of the toolkit's recipe (issue 20, part 2), each a paired comparison with the default:
it starts from the same plain model and, where it differs only in a later stage, from the default's own
finished stages.

    python benchmarks/peers/run.py --scale quick --out runs/peers-quick --variants distill,costaware
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import results
import toolkit


@dataclass(frozen=True)
class Variant:
    label: str
    needs: list = field(default_factory=lambda: ["toolkit"])


VARIANTS = {
    "distill": Variant("toolkit + `--distill` (fine-tuning taught by its sparse model)"),
    "distill-a05": Variant("toolkit + distillation at α = 0.5 (`compress finetune --distill SPARSE --alpha 0.5`)"),
    "ft-lr05": Variant("toolkit, fine-tuning at peak LR 0.05 (`--finetune-lr 0.05`)"),
    "sparse-lr05": Variant("toolkit, sparse stage at peak LR 0.05 (`--lr 0.05`), pruned to the default's MACs"),
    "costweighted": Variant("toolkit, sparse stage's pull weighted by each channel's MACs, pruned to the default's "
                            "MACs (prototype: `cost_weighted.py`)"),
    "targeted": Variant("toolkit, penalty on the channels the prune will remove only (`TargetedSparsity`), "
                        "cost-aware, pruned to the default's MACs"),
    "targeted-gamma": Variant("toolkit, penalty on the channels the prune will remove only (`TargetedSparsity`), "
                              "|γ| importance, pruned to the default's MACs"),
    "targeted-r04": Variant("toolkit, `TargetedSparsity(reach=0.4)`, |γ| importance, pruned to the default's MACs"),
    "targeted-r09": Variant("toolkit, `TargetedSparsity(reach=0.9)`, |γ| importance, pruned to the default's MACs"),
    "targeted-rel": Variant("toolkit, `TargetedSparsity()` with each unit's |γ| divided by its mean (prototype: "
                            "`relative_importance.py`), pruned to the default's MACs"),
    "select": Variant("toolkit with the paper's channel selections on shared channels (`--shared select`), "
                      "MACs matched by Torch-Pruning's counter"),  # needs the default's MACs
    "costaware": Variant("toolkit, cost-aware importance at the default's MACs (`--target-macs --cost-aware`)"),
    "latency": Variant("toolkit, |γ| scaled by the measured speed of the channel's convolutions (β = 1), "
                       "pruned to the default's MACs (prototype: `latency_aware.py`)"),
    "fullres": Variant("toolkit, |γ| divided by the channel's MACs cost for the channels of full-resolution "
                       "convolutions only, pruned to the default's MACs (prototype: `fullres_cost.py`)"),
    "fullres-sqrt": Variant("toolkit, |γ| divided by the square root of the channel's MACs cost for the channels "
                            "of full-resolution convolutions only, pruned to the default's MACs (prototype: "
                            "`fullres_cost.py`)"),
    # Which half of the pipeline loses at the `cpu` scale: the toolkit's prune and fine-tuning, given a peer's
    # second stage instead of its own targeted one (same plain model, same epochs, same prune request).
    "on-bnscale": Variant("toolkit's prune (the default's `--shared`, MACs matched by Torch-Pruning's counter, BN "
                          "re-estimation when inexact) and "
                          "fine-tuning of BNScalePruner's second-stage model", needs=["toolkit", "tp-bnscale.second"]),
    "on-bnscale-rel": Variant("toolkit's prune (the default's `--shared`, each unit's |γ| divided by its mean: "
                              "prototype `relative_importance.py`; MACs matched by Torch-Pruning's counter) and "
                              "fine-tuning of BNScalePruner's second-stage model",
                              needs=["toolkit", "tp-bnscale.second"]),
    "on-bnscale-raw": Variant("toolkit's prune as `on-bnscale` but with neither BN re-estimation nor β folding "
                              "(`--recalibrate 0 --no-compensate`, as Torch-Pruning prunes) and fine-tuning of "
                              "BNScalePruner's second-stage model", needs=["toolkit", "tp-bnscale.second"]),
    "on-l1": Variant("toolkit's prune (the default's `--shared`, MACs matched by Torch-Pruning's counter, BN "
                     "re-estimation when inexact) and "
                     "fine-tuning of the L1 peer's second stage (plain training)", needs=["toolkit", "tp-l1.second"]),
}


def _macs_fraction(where: Path) -> float:
    """The default's pruned MACs as a fraction of its sparse model's (the toolkit's own counter, which
    `--target-macs` uses)."""
    base = where / "toolkit"
    sparse = json.loads((base / "sparse" / "model.json").read_text())
    pruned = json.loads((base / "pruned" / "model.json").read_text())
    return pruned["macs"] / sparse["macs"]


def _default_shared(where: Path) -> str:
    """How the default pruned shared channels (the quick preset's `--shared narrow`), so that a variant
    built on compress.PruneRequest, whose own default is the paper's "select", prunes them the same way."""
    return json.loads((where / "toolkit" / "pruned" / "plan.json").read_text())["shared"]


def run(name: str, where: Path, cfg: dict, seed: int, args) -> dict:
    variant = VARIANTS[name]
    out = where / name
    target = results.target_of(where)[0]
    if name == "distill":
        toolkit.reuse_stages(where / "toolkit", out, ["sparse", "pruned"])
        wall = toolkit.slim(cfg, seed, where / "pretrained", out, args.device, ["--distill"])
    elif name == "ft-lr05":
        toolkit.reuse_stages(where / "toolkit", out, ["sparse", "pruned"])
        wall = toolkit.slim(cfg, seed, where / "pretrained", out, args.device, ["--finetune-lr", "0.05"])
    elif name == "sparse-lr05":
        wall = toolkit.slim(cfg, seed, where / "pretrained", out, args.device,
                            ["--lr", "0.05", "--target-macs", repr(_macs_fraction(where))])
    elif name == "costweighted":
        wall = _cost_weighted(where, out, cfg, seed, args)
    elif name in ("targeted", "targeted-gamma"):
        wall = _targeted(where, out, cfg, seed, args, "cost" if name == "targeted" else "gamma")
    elif name == "targeted-rel":
        from relative_importance import relative

        # Its widths differ from the default's (wider streams), so its budget is matched by Torch-Pruning's
        # counter, bisected on the plain model as for `select`.
        wall = _targeted(where, out, cfg, seed, args, relative, reach=0.4,
                         fraction=_matched_fraction(where, cfg, shared=_default_shared(where), importance=relative))
    elif name in ("targeted-r04", "targeted-r09"):
        wall = _targeted(where, out, cfg, seed, args, "gamma", reach=0.4 if name.endswith("04") else 0.9)
    elif name == "distill-a05":
        toolkit.reuse_stages(where / "toolkit", out, ["sparse", "pruned"])
        wall = toolkit.finetune(cfg, seed, out, args.device, ["--distill", str(out / "sparse"), "--alpha", "0.5"])
    elif name == "select":
        wall = _select(where, out, cfg, seed, args)
    elif name == "latency":
        wall = _latency(where, out, cfg, seed, args)
    elif name in ("fullres", "fullres-sqrt"):
        wall = _fullres(where, out, cfg, seed, args, power=0.5 if name == "fullres-sqrt" else 1.0)
    elif name.startswith("on-"):
        peer = variant.needs[-1].removesuffix(".second")  # the peer whose second stage it prunes
        toolkit.reuse_stages(where / peer, out, ["sparse"])
        wall = _prune_peer_stage(name, where, out, cfg, seed, args)
        wall += toolkit.finetune(cfg, seed, out, args.device)
    elif name == "costaware":
        toolkit.reuse_stages(where / "toolkit", out, ["sparse"])
        wall = toolkit.prune(cfg, out / "sparse", out, args.device,
                             ["--target-macs", repr(_macs_fraction(where)), "--cost-aware", "--shared",
                              _default_shared(where)])
        wall += toolkit.finetune(cfg, seed, out, args.device)
    else:
        raise KeyError(name)
    reused = 0.0 if name in ("sparse-lr05", "costweighted", "select", "latency") \
        or name.startswith(("targeted", "fullres")) \
        else _reused_train_s(out)
    return results.slim_record(out, variant.label, wall + reused, target_macs=target)


def _reused_train_s(out: Path) -> float:
    """Training time of the stages copied from the default (or a peer), so that a variant's wall time is its
    whole run's."""
    stages = ["sparse"]
    total = 0.0
    for stage in stages:
        meta = json.loads((out / stage / "model.json").read_text())
        total += float((meta.get("training") or {}).get("wall_time_s")
                       or (meta.get("peers") or {}).get("train_time_s") or 0.0)  # a peer's stage
    return total


def _cost_weighted(where: Path, out: Path, cfg: dict, seed: int, args) -> float:
    """`compress.slim` from the shared plain model with the cost-weighted penalty, steered to hold at zero
    the share of channels that a MACs budget equal to the default's would remove, then pruned to it."""
    import compress
    from cost_weighted import CostWeightedConfig, percent_for

    fraction = _macs_fraction(where)
    plain, _ = compress.load_model(where / "pretrained")
    round_to = results.target_of(where)[1]
    goal = percent_for(plain, fraction, min_keep=cfg["min_keep"], round_to=round_to)
    prune = compress.PruneRequest(target_macs=fraction, min_keep=cfg["min_keep"], round_to=cfg["round_to"],
                                  shared=_default_shared(where))
    return _slim_from_plain(where, out, cfg, seed, args, prune,
                            CostWeightedConfig(percent=goal, min_keep=cfg["min_keep"], round_to=round_to))


def _targeted(where: Path, out: Path, cfg: dict, seed: int, args, importance, reach: float = 0.7,
              fraction: float | None = None) -> float:
    """`compress.slim` from the shared plain model with the penalty on the channels its prune (to the
    default's MACs, or `fraction` of the MACs) will remove, re-decided during the sparse stage."""
    import compress

    prune = compress.PruneRequest(target_macs=fraction or _macs_fraction(where), min_keep=cfg["min_keep"],
                                  round_to=cfg["round_to"], importance=importance, shared=_default_shared(where))
    return _slim_from_plain(where, out, cfg, seed, args, prune, compress.TargetedSparsity(reach=reach))


def _latency(where: Path, out: Path, cfg: dict, seed: int, args) -> float:
    """The default run with the latency-aware importance (latency_aware.py), at the default's MACs."""
    import compress
    import latency_aware

    plain, meta = compress.load_model(where / "pretrained")
    speeds = latency_aware.speeds_for(where)
    prune = compress.PruneRequest(target_macs=_macs_fraction(where), min_keep=cfg["min_keep"], round_to=cfg["round_to"],
                                  importance=latency_aware.importance(plain, speeds, meta["input_size"]),
                                  shared=_default_shared(where))
    return _slim_from_plain(where, out, cfg, seed, args, prune, compress.TargetedSparsity())


def _fullres(where: Path, out: Path, cfg: dict, seed: int, args, power: float) -> float:
    """The default run with the cost-aware importance on full-resolution channels only (fullres_cost.py),
    the cost raised to `power`, at the default's MACs."""
    import compress
    import fullres_cost

    plain, meta = compress.load_model(where / "pretrained")
    prune = compress.PruneRequest(target_macs=_macs_fraction(where), min_keep=cfg["min_keep"], round_to=cfg["round_to"],
                                  importance=fullres_cost.importance(plain, meta["input_size"], power),
                                  shared=_default_shared(where))
    return _slim_from_plain(where, out, cfg, seed, args, prune, compress.TargetedSparsity())


def _select(where: Path, out: Path, cfg: dict, seed: int, args) -> float:
    """The default run with `shared="select"` (the paper's channel selections, the default before
    2026-12-05), its MACs budget set so that Torch-Pruning's counter (which also counts BN and activations,
    whose widths the two modes set differently) gives the default's MACs: bisected on the plain model,
    whose decision has the same shape as the trained one's."""
    import compress

    fraction = _matched_fraction(where, cfg, shared="select")
    prune = compress.PruneRequest(target_macs=fraction, min_keep=cfg["min_keep"], round_to=cfg["round_to"], shared="select")
    return _slim_from_plain(where, out, cfg, seed, args, prune, compress.TargetedSparsity())


def _prune_peer_stage(name: str, where: Path, out: Path, cfg: dict, seed: int, args) -> float:
    """`compress prune` of OUT/sparse (a peer's second stage) as the CLI runs it (accuracy right after, BN
    re-estimation when inexact), shared channels as the default prunes them, at the default's MACs by
    Torch-Pruning's counter: `-rel` ranks by the relative importance (a callable, so through the library
    stage), `-raw` neither folds β nor re-estimates BN statistics."""
    import time

    import compress
    from compress.stages.prune import prune

    if (out / "pruned" / "model.json").exists():
        return 0.0
    t0 = time.time()
    shared = _default_shared(where)
    if name.endswith("-rel"):
        from relative_importance import relative

        fraction = _matched_fraction(where, cfg, shared=shared, source=out / "sparse", importance=relative)
        request = compress.PruneRequest(target_macs=fraction, min_keep=cfg["min_keep"], round_to=cfg["round_to"],
                                        shared=shared, importance=relative)
        prune(out / "sparse", out / "pruned", request, data=results.data_for(cfg, seed), device=args.device)
        return time.time() - t0
    fraction = _matched_fraction(where, cfg, shared=shared, source=out / "sparse")
    raw = ["--recalibrate", "0", "--no-compensate"] if name.endswith("-raw") else []
    toolkit.prune(cfg, out / "sparse", out, args.device, ["--target-macs", repr(fraction), "--shared", shared, *raw])
    return time.time() - t0


def _matched_fraction(where: Path, cfg: dict, *, shared: str, steps: int = 12, source: Path | None = None,
                      importance="gamma") -> float:
    """The `--target-macs` fraction whose prune of `source` (the plain model by default) Torch-Pruning's
    counter puts at the default's MACs."""
    import copy

    import torch

    import compress
    import tp_methods

    target, round_to = results.target_of(where)
    plain, meta = compress.load_model(source or where / "pretrained")
    example = torch.zeros(1, *meta["input_size"])

    def tp_macs(fraction: float) -> int:
        model = copy.deepcopy(plain)
        compress.prune(model, example, target_macs=fraction, min_keep=cfg["min_keep"], round_to=round_to,
                       shared=shared, importance=importance)
        return tp_methods.count(model, example)[0]

    lo, hi = 0.3, 0.7
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tp_macs(mid) < target else (lo, mid)
    return (lo + hi) / 2


def _slim_from_plain(where: Path, out: Path, cfg: dict, seed: int, args, prune, sparsity) -> float:
    """`compress.slim` from the shared plain model with the scale's recipe and epochs, the given prune request
    and sparsity; returns its wall time in seconds."""
    import time

    import compress
    from compress.training import Recipe

    t0 = time.time()
    options = compress.SlimOptions(
        train_recipe=Recipe.named(cfg["recipe"], epochs=cfg["sparse_epochs"]),
        finetune_recipe=Recipe.finetuning(cfg["recipe"], epochs=cfg["finetune_epochs"], lr=cfg.get("finetune_lr")),
        prune=prune,
        sparsity=sparsity)
    compress.slim(None, results.data_for(cfg, seed), out, options, start_from=where / "pretrained",
                  run=compress.RunOptions(device=args.device, seed=seed, progress=args.progress,
                                         precision=cfg["precision"]))
    return time.time() - t0
