"""A Torch-Pruning method as three resumable stages over model directories: second stage (the method's
sparse training, or plain training for L1), pruning to the target MACs, fine-tuning.

Every stage is a model directory written by `compress.save_model` (model.json last), so a finished stage
is reused on a rerun when it was made from the same parent weights, and an interrupted training resumes
from `fit`'s per-epoch state.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

import compress
from compress.training import Recipe, finish, fit

import tp_methods


def _complete(stage: Path, parent_sha: str) -> dict | None:
    """The stage's model.json if it is finished and was made from `parent_sha`, else None."""
    path = stage / "model.json"
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    return meta if (meta.get("peers") or {}).get("parent_sha") == parent_sha else None


def _save(model, out: Path, parent: dict, accuracy: float, info: dict) -> dict:
    norm = parent["normalization"]
    return compress.save_model(model.cpu(), out, classes=parent["classes"], input_size=parent["input_size"],
                               mean=norm["mean"], std=norm["std"], arch=parent["arch"],
                               arch_kwargs=parent["arch_kwargs"], accuracy=accuracy,
                               peers={"parent_sha": parent["weights_sha256"], **info})


def train_stage(parent_dir: Path, out: Path, data, recipe: Recipe, *, method: str, seed: int, device,
                progress: bool, sparse: bool, precision: str) -> dict:
    """Train the parent's weights with `recipe` (and the method's regularizer when `sparse`) into `out`."""
    model, parent = compress.load_model(parent_dir)
    done = _complete(out, parent["weights_sha256"])
    if done is not None:
        return done
    t0 = time.time()
    example = torch.zeros(1, *parent["input_size"])
    sparsity = tp_methods.regularizer(method, model, example, len(parent["classes"])) if sparse else 0.0
    norm = parent["normalization"]
    tag = hashlib.sha256(json.dumps([method, parent["weights_sha256"], recipe.__dict__, sparse, seed],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    (out / "model.json").unlink(missing_ok=True)
    result = fit(model, data.split("train"), data.split("test"), out, recipe, mean=norm["mean"], std=norm["std"],
                 sparsity=sparsity, device=device, seed=seed, resume=True, progress=progress,
                 desc=f"{method} {'sparse' if sparse else 'train'}", tag=tag, precision=precision)
    wall = sum(r.get("epoch_time_s", 0.0) for r in result["history"])
    saved = _save(model, out, parent, result["last"]["test_accuracy"],
                  {"stage": "sparse" if sparse else "train", "method": method, "epochs": recipe.epochs, "lr": recipe.lr,
                   "precision": result["precision"], "train_time_s": round(wall, 1),
                   "wall_s": round(time.time() - t0, 1)})
    finish(out)
    return saved


def prune_stage(parent_dir: Path, out: Path, data, *, method: str, target_macs: int, min_keep: float,
                round_to: int, device) -> dict:
    """Prune the parent to `target_macs` (Torch-Pruning MACs) with the method's importance; record the
    accuracy right after pruning, without BN re-estimation."""
    model, parent = compress.load_model(parent_dir)
    done = _complete(out, parent["weights_sha256"])
    if done is not None:
        return done
    t0 = time.time()
    example = torch.zeros(1, *parent["input_size"])
    n_classes = len(parent["classes"])
    search = tp_methods.match_macs(method, model, example, target_macs, min_keep=min_keep, round_to=round_to,
                                   num_classes=n_classes)
    tp_methods.prune(method, model, example, search["ratio"], min_keep=min_keep, round_to=round_to,
                     num_classes=n_classes, blocks=search["blocks"])
    macs, params = tp_methods.count(model, example)
    if (macs, params) != (search["macs"], search["params"]):
        raise RuntimeError(f"{method}: pruning at ratio {search['ratio']} (+ {len(search['blocks'])} blocks) gave {macs} MACs, the search "
                           f"{search['macs']}; the pruning is not reproducible")
    norm = parent["normalization"]
    acc = compress.evaluate(model, data.split("test"), norm["mean"], norm["std"], device=device or "cpu")
    return _save(model, out, parent, acc["accuracy"],
                 {"stage": "pruned", "method": method, "target_macs": target_macs, "min_keep": min_keep,
                  "round_to": round_to, "search": search,
                  "wall_s": round(time.time() - t0, 1)})


def second_stage(method: str, start: Path, run: Path, data, cfg: dict, *, seed: int, device,
                 progress: bool) -> dict:
    """The method's second stage alone: it needs only the plain model, not the toolkit's MACs, so it can run
    while the toolkit's own run is still training."""
    spec = tp_methods.METHODS[method]
    return train_stage(start, run / "sparse", data, Recipe.named(cfg["recipe"], epochs=cfg["sparse_epochs"]),
                       method=method, seed=seed, device=device, progress=progress, sparse=spec.reg is not None,
                       precision=cfg["precision"])


def run_method(method: str, start: Path, run: Path, data, cfg: dict, *, seed: int, target_macs: int,
               round_to: int, device, progress: bool) -> dict:
    """The three stages of a Torch-Pruning method from the shared plain model `start` into `run`."""
    second = second_stage(method, start, run, data, cfg, seed=seed, device=device, progress=progress)
    pruned = prune_stage(run / "sparse", run / "pruned", data, method=method, target_macs=target_macs,
                         min_keep=cfg["min_keep"], round_to=round_to, device=device)
    final = train_stage(run / "pruned", run / "finetuned", data,
                        Recipe.finetuning(cfg["recipe"], epochs=cfg["finetune_epochs"], lr=cfg.get("finetune_lr")),
                        method=method, seed=seed,
                        device=device, progress=progress, sparse=False, precision=cfg["precision"])
    return {"second": second, "pruned": pruned, "final": final}
