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
    "costaware": Variant("toolkit, cost-aware importance at the default's MACs (`--target-macs --cost-aware`)"),
}


def _macs_fraction(where: Path) -> float:
    """The default's pruned MACs as a fraction of its sparse model's (the toolkit's own counter, which
    `--target-macs` uses)."""
    base = where / "toolkit"
    sparse = json.loads((base / "sparse" / "model.json").read_text())
    pruned = json.loads((base / "pruned" / "model.json").read_text())
    return pruned["macs"] / sparse["macs"]


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
    elif name == "distill-a05":
        toolkit.reuse_stages(where / "toolkit", out, ["sparse", "pruned"])
        wall = toolkit.finetune(cfg, seed, out, args.device, ["--distill", str(out / "sparse"), "--alpha", "0.5"])
    elif name == "costaware":
        toolkit.reuse_stages(where / "toolkit", out, ["sparse"])
        wall = toolkit.prune(cfg, out / "sparse", out, args.device,
                             ["--target-macs", repr(_macs_fraction(where)), "--cost-aware"])
        wall += toolkit.finetune(cfg, seed, out, args.device)
    else:
        raise KeyError(name)
    reused = 0.0 if name == "sparse-lr05" else _reused_train_s(out)
    return results.slim_record(out, variant.label, wall + reused, target_macs=target)


def _reused_train_s(out: Path) -> float:
    """Training time of the stages copied from the default, so that a variant's wall time is its whole run's."""
    stages = ["sparse"]
    total = 0.0
    for stage in stages:
        meta = json.loads((out / stage / "model.json").read_text())
        total += float((meta.get("training") or {}).get("wall_time_s") or 0.0)
    return total
