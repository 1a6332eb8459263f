"""One (seed, method) run to its result record: accuracies after each stage, params and MACs by one
counter (Torch-Pruning's), the MACs target it was matched to, and wall time."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import compress

_DATA: dict = {}


def data_for(cfg: dict, seed: int):
    """The same images `compress` commands use for these options (one load per process and seed)."""
    key = (cfg["data"], cfg["train_limit"], cfg["test_limit"], seed)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = compress.DataOptions(cfg["data"], cfg["train_limit"], cfg["test_limit"], seed)
    return _DATA[key]


def counted(model_dir: Path) -> tuple[int, int]:
    """(MACs, params) of a model directory by torch_pruning.utils.count_ops_and_params."""
    import tp_methods

    model, meta = compress.load_model(model_dir)
    return tp_methods.count(model, torch.zeros(1, *meta["input_size"]))


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def slim_record(run: Path, label: str, wall: float, target_macs: int | None = None) -> dict:
    """Record of a `compress slim`-layout run (OUT/sparse, OUT/pruned, OUT/finetuned)."""
    sparse, pruned, final = (_read(run / s / "model.json") for s in ("sparse", "pruned", "finetuned"))
    plan = _read(run / "pruned" / "plan.json")
    macs, params = counted(run / "finetuned")
    pruning = pruned.get("pruning") or {}
    raw = pruning.get("accuracy_uncalibrated")
    target = macs if target_macs is None else target_macs
    return {
        "label": label, "sparse_accuracy": sparse["accuracy"],
        "pruned_accuracy": raw if raw is not None else pruned["accuracy"],
        "pruned_accuracy_recalibrated": pruned["accuracy"] if pruning.get("bn_recalibration_images") else None,
        "final_accuracy": final["accuracy"], "params": params, "macs": macs, "macs_target": target,
        "macs_error": macs / target - 1, "params_toolkit_counter": final["params"],
        "macs_toolkit_counter": final["macs"], "round_to": plan.get("round_to"), "min_keep": plan.get("min_keep"),
        "exact_removal": pruning.get("exact_removal"), "wall_s": round(wall, 1),
        "stage_train_s": {s: (m.get("training") or {}).get("wall_time_s") for s, m in
                          (("sparse", sparse), ("finetuned", final))},
        "final_dir": f"{run.name}/finetuned",
    }


def toolkit_record(where: Path, cfg: dict, seed: int, args) -> dict:
    import toolkit

    wall = toolkit.slim(cfg, seed, where / "pretrained", where / "toolkit", args.device)
    return slim_record(where / "toolkit", "this toolkit, `compress slim` (default)", wall)


def target_of(where: Path) -> tuple[int, int]:
    """The toolkit default's MACs (Torch-Pruning counter) and the round_to its `--round-to auto` resolved to,
    from its pruned stage: fine-tuning keeps the architecture, so a peer may prune while it runs."""
    pruned = where / "toolkit" / "pruned"
    return counted(pruned)[0], int(_read(pruned / "plan.json")["round_to"])


def peer_record(method: str, where: Path, cfg: dict, seed: int, args) -> dict:
    import time

    import tp_methods
    import tp_stages

    target, round_to = target_of(where)
    t0 = time.time()
    stages = tp_stages.run_method(method, where / "pretrained", where / method, data_for(cfg, seed), cfg,
                                  seed=seed, target_macs=target, round_to=round_to, device=args.device,
                                  progress=args.progress)
    search = stages["pruned"]["peers"]["search"]
    macs, params = counted(where / method / "finetuned")
    walls = [stages[s]["peers"].get("wall_s", 0.0) for s in ("second", "pruned", "final")]
    return {
        "label": tp_methods.METHODS[method].label, "sparse_accuracy": stages["second"]["accuracy"],
        "pruned_accuracy": stages["pruned"]["accuracy"], "final_accuracy": stages["final"]["accuracy"],
        "params": params, "macs": macs, "macs_target": target, "macs_error": macs / target - 1,
        "params_toolkit_counter": stages["final"]["params"], "macs_toolkit_counter": stages["final"]["macs"],
        "round_to": round_to, "min_keep": cfg["min_keep"], "pruning_ratio": search["ratio"],
        "macs_matched": search["matched"], "wall_s": round(sum(walls), 1),
        "this_process_s": round(time.time() - t0, 1), "final_dir": f"{method}/finetuned",
    }


def collect(method: str, where: Path, cfg: dict, seed: int, args) -> dict:
    import variants

    if method == "toolkit":
        record = toolkit_record(where, cfg, seed, args)
    elif method.startswith("tp-"):
        record = peer_record(method, where, cfg, seed, args)
    else:
        record = variants.run(method, where, cfg, seed, args)
    return {"method": method, "seed": seed, **record}
