"""The slimming stages as functions over model directories: train, prune, finetune, and slim (all three).

Each stage writes a complete model directory or nothing that looks complete: `model.json` is
written last, and resumable training state lives beside it until the stage finishes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compress.artifact import derived_meta, is_model_dir, load_model_dir, read_meta, save_model_dir
from compress.atomic import write_json, write_text
from compress.data import ImageSet, load_dataset
from compress.errors import CompressError
from compress.train import Distill, Recipe, evaluate, finish, fit, is_main_process, pick_device


@dataclass
class DataOptions:
    spec: str
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    def split(self, name: str) -> ImageSet:
        if name not in self._cache:
            limit = self.train_limit if name == "train" else self.test_limit
            self._cache[name] = load_dataset(self.spec, name, limit=limit, seed=self.seed)
        return self._cache[name]

    def describe(self) -> dict:
        return {"spec": self.spec, "train_limit": self.train_limit, "test_limit": self.test_limit}


def command_line() -> str:
    return " ".join(["compress", *sys.argv[1:]]) if sys.argv else "compress"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _sync_and_read(out: Path) -> dict:
    """Under torchrun, other ranks wait for rank 0 to write the model directory, then read it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return read_meta(out)


def _finished(out: Path, resume: bool, parent_sha: str | None = None) -> bool:
    """A finished stage is reused on resume only if it was made from the same parent weights."""
    if not resume or not is_model_dir(out) or (out / "train_state").exists():
        return False
    if parent_sha is None:
        return True
    meta = read_meta(out)
    made_from = (meta.get("parent") or {}).get("sha256")
    if made_from == parent_sha:
        return True
    _log(f"{out} was made from other weights than its parent has now; redoing it")
    return False


def _tag(settings: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_arch(arch: str, arch_kwargs: dict | None, num_classes: int = 10) -> None:
    """Fail on a bad architecture name or argument before any data is loaded."""
    from models import create_model

    try:
        create_model(arch, **{"num_classes": num_classes, **(arch_kwargs or {})})
    except ValueError as exc:
        raise CompressError(str(exc)) from None


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CompressError(f"output {out} exists and is not a directory")


def train_model(arch: str, data: DataOptions, out: str | Path, recipe: Recipe, *, sparsity: float = 0.0,
                arch_kwargs: dict | None = None, device=None, seed: int = 0, resume: bool = True,
                compile: bool = False, progress: bool = True) -> dict:
    from models import create_model

    out = Path(out)
    settings = {"arch": arch, "arch_kwargs": arch_kwargs or {}, "sparsity": sparsity, "epochs": recipe.epochs,
                "data": data.describe()}
    if _finished(out, resume):
        meta = read_meta(out)
        done = {"arch": meta["arch"], "arch_kwargs": {k: v for k, v in meta["arch_kwargs"].items()
                                                      if k != "num_classes"},
                "sparsity": (meta.get("training") or {}).get("sparsity"),
                "epochs": ((meta.get("training") or {}).get("recipe") or {}).get("epochs"),
                "data": meta.get("data")}
        if done != settings:
            raise CompressError(f"{out} holds a model trained with other settings; "
                                "use another --out or --no-resume")
        _log(f"{out} is already trained; keeping it")
        return meta
    _check_out_dir(out)
    check_arch(arch, arch_kwargs)
    train, test = data.split("train"), data.split("test")
    kwargs = {"num_classes": len(train.classes), **(arch_kwargs or {})}
    torch.manual_seed(seed)
    try:
        model = create_model(arch, **kwargs)
    except ValueError as exc:
        raise CompressError(str(exc)) from None
    if train.input_size[1:] != test.input_size[1:]:
        raise CompressError(f"train images are {train.input_size}, test images {test.input_size}")
    mean, std = train.channel_stats()
    (out / "model.json").unlink(missing_ok=True)
    t0 = time.time()
    result = fit(model, train, test, out, recipe, mean=mean, std=std, sparsity=sparsity, device=device,
                 seed=seed, resume=resume, compile=compile, progress=progress,
                 desc="sparse" if sparsity > 0 else "train", tag=_tag(settings))
    if not is_main_process():
        return _sync_and_read(out)
    meta = {
        "arch": arch, "arch_kwargs": kwargs, "classes": train.classes, "input_size": list(train.input_size),
        "normalization": {"mean": mean, "std": std}, "accuracy": result["last"]["test_accuracy"],
        "best_accuracy": result["best"]["test_accuracy"], "data": data.describe(),
        "training": {"recipe": result["recipe"], "sparsity": sparsity, "seed": seed,
                     "wall_time_s": _wall_time(result, t0)},
        "command": command_line(),
    }
    model.cpu()
    saved = save_model_dir(model, out, meta)
    finish(out)
    _sync_and_read(out)
    return saved


def _wall_time(result: dict, t0: float) -> float:
    # A resumed run counts the epochs done before the interruption too.
    return round(sum(r.get("epoch_time_s", 0) for r in result["history"]), 1) or round(time.time() - t0, 1)


def prune_model(model_dir: str | Path, out: str | Path, *, percent: float, min_keep: float = 0.2,
                min_channels: int = 1, round_to: int = 1, compensate: bool = True, plan_path=None,
                data: DataOptions | None = None, recalibrate: int = 2000, device=None,
                target_macs: float | None = None, target_params: float | None = None,
                cost_aware: bool = False) -> dict:
    """Prune a model directory; with `data`, measure accuracy and re-estimate BN statistics on
    `recalibrate` training images (0 disables it)."""
    from compress.slimming import prune, recalibrate_batchnorm

    t0 = time.time()
    model, meta = load_model_dir(model_dir)
    plan = None
    if plan_path is not None:
        try:
            plan = json.loads(Path(plan_path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CompressError(f"cannot read plan {plan_path}: {exc}") from None
    example = torch.zeros(1, *meta["input_size"])
    before_params, before_macs = meta["params"], meta["macs"]
    model, plan = prune(model, percent, example, min_keep=min_keep, min_channels=min_channels,
                        round_to=round_to, compensate=compensate, plan=plan, target_macs=target_macs,
                        target_params=target_params, cost_aware=cost_aware)
    plan["source"] = {"path": str(model_dir), "weights_sha256": meta.get("weights_sha256")}
    accuracy = uncalibrated = None
    recalibrated_on = 0
    if data is not None:
        test = data.split("test")
        _check_classes(meta, test)
        norm = meta["normalization"]
        dev = pick_device(device)
        accuracy = uncalibrated = evaluate(model, test, norm["mean"], norm["std"], device=dev)["accuracy"]
        if recalibrate > 0:
            from compress.data import Batches, stratified_subset

            calib = stratified_subset(data.split("train"), recalibrate, seed=data.seed)
            recalibrated_on = len(calib)
            batches = (x for x, _ in Batches(calib, 250, norm["mean"], norm["std"], train=False, device=dev))
            recalibrate_batchnorm(model, batches)
            accuracy = evaluate(model, test, norm["mean"], norm["std"], device=dev)["accuracy"]
        model.cpu()
    out = Path(out)
    (out / "model.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", plan)
    new_meta = derived_meta(meta, model_dir, accuracy=accuracy, command=command_line(),
                            pruning={"percent": plan["percent"], "threshold": plan["threshold"],
                                     "channels_before": plan["channels_before"],
                                     "channels_after": plan["channels_after"],
                                     "params_before": before_params, "macs_before": before_macs,
                                     "min_keep": plan["min_keep"], "round_to": round_to,
                                     "budget": plan.get("budget"),
                                     "accuracy_before_pruning": meta.get("accuracy"),
                                     "accuracy_uncalibrated": uncalibrated,
                                     "bn_recalibration_images": recalibrated_on,
                                     "wall_time_s": round(time.time() - t0, 1)})
    return save_model_dir(model, out, new_meta)


def _check_classes(meta: dict, data: ImageSet) -> None:
    if len(meta["classes"]) != len(data.classes):
        raise CompressError(f"model has {len(meta['classes'])} classes, data has {len(data.classes)}")
    if list(meta["classes"]) != list(data.classes):
        raise CompressError("the data's class names differ from the model's; labels would not line up")
    if tuple(meta["input_size"]) != data.input_size:
        raise CompressError(f"model expects {meta['input_size']} images, data has {list(data.input_size)}")


def finetune_model(model_dir: str | Path, data: DataOptions, out: str | Path, recipe: Recipe, *,
                   distill_dir=None, temperature: float = 4.0, alpha: float = 0.9, device=None, seed: int = 0,
                   resume: bool = True, compile: bool = False, progress: bool = True) -> dict:
    out = Path(out)
    if Path(model_dir).resolve() == out.resolve():
        raise CompressError("--out must differ from the model directory being fine-tuned")
    model, meta = load_model_dir(model_dir)
    if _finished(out, resume, parent_sha=meta.get("weights_sha256")):
        _log(f"{out} is already fine-tuned; keeping it")
        return read_meta(out)
    train, test = data.split("train"), data.split("test")
    _check_classes(meta, train)
    distill = None
    if distill_dir is not None:
        teacher, tmeta = load_model_dir(distill_dir)
        if tmeta["classes"] != meta["classes"]:
            raise CompressError(f"teacher {distill_dir} predicts other classes than the student")
        distill = Distill(teacher, temperature, alpha)
    norm = meta["normalization"]
    (out / "model.json").unlink(missing_ok=True)
    t0 = time.time()
    tag = _tag({"parent": meta.get("weights_sha256"), "epochs": recipe.epochs, "lr": recipe.lr,
                "distill": str(distill_dir), "data": data.describe()})
    result = fit(model, train, test, out, recipe, mean=norm["mean"], std=norm["std"], device=device, seed=seed,
                 resume=resume, distill=distill, compile=compile, progress=progress, desc="finetune", tag=tag)
    if not is_main_process():
        return _sync_and_read(out)
    extra = {"pruning": meta["pruning"]} if "pruning" in meta else {}
    new_meta = derived_meta(meta, model_dir, accuracy=result["last"]["test_accuracy"],
                            best_accuracy=result["best"]["test_accuracy"], command=command_line(),
                            training={"recipe": result["recipe"], "seed": seed, "wall_time_s": _wall_time(result, t0),
                                      "distilled_from": str(distill_dir) if distill_dir else None},
                            data=data.describe(), **extra)
    model.cpu()
    saved = save_model_dir(model, out, new_meta)
    finish(out)
    _sync_and_read(out)
    return saved


def evaluate_model_dir(model_dir, data: DataOptions, device=None) -> dict:
    model, meta = load_model_dir(model_dir)
    test = data.split("test")
    _check_classes(meta, test)
    norm = meta["normalization"]
    return evaluate(model, test, norm["mean"], norm["std"], device=pick_device(device))


def slim(arch: str, data: DataOptions, out: str | Path, *, percent: float, sparsity: float,
         train_recipe: Recipe, finetune_recipe: Recipe, arch_kwargs: dict | None = None, min_keep: float = 0.2,
         round_to: int = 1, distill: bool = False, device=None, seed: int = 0, compile: bool = False,
         progress: bool = True, resume: bool = True, budget: dict | None = None) -> dict:
    """Sparse training → pruning → fine-tuning; re-running continues from the last finished stage.

    `budget` ({"target_macs": F} or {"target_params": F}) replaces `percent` for pruning."""
    out = Path(out)
    check_arch(arch, arch_kwargs)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    stages = {}
    t = time.time()
    _log(f"[1/3] sparse training {arch} (λ={sparsity}, {train_recipe.epochs} epochs) → {out / 'sparse'}")
    stages["sparse"] = train_model(arch, data, out / "sparse", train_recipe, sparsity=sparsity,
                                   arch_kwargs=arch_kwargs, device=device, seed=seed, compile=compile,
                                   progress=progress, resume=resume)
    times["sparse"] = stages["sparse"]["training"]["wall_time_s"]
    t = time.time()
    _log(f"[2/3] pruning {percent:.0%} of channels → {out / 'pruned'}")
    sparse_sha = stages["sparse"]["weights_sha256"]
    if resume and _finished(out / "pruned", True, parent_sha=sparse_sha) and _same_prune(
            out / "pruned", percent, min_keep, round_to):
        stages["pruned"] = read_meta(out / "pruned")
    elif is_main_process():
        stages["pruned"] = prune_model(out / "sparse", out / "pruned", percent=percent, min_keep=min_keep,
                                       round_to=round_to, data=data, device=device, **(budget or {}))
        _sync_and_read(out / "pruned")
    else:
        stages["pruned"] = _sync_and_read(out / "pruned")
    times["pruned"] = stages["pruned"]["pruning"].get("wall_time_s", round(time.time() - t, 1))
    if stages["pruned"].get("accuracy") is not None:
        _log(f"      accuracy right after pruning: {stages['pruned']['accuracy']:.2%}")
    _log(f"[3/3] fine-tuning ({finetune_recipe.epochs} epochs) → {out / 'finetuned'}")
    stages["finetuned"] = finetune_model(out / "pruned", data, out / "finetuned", finetune_recipe,
                                         distill_dir=(out / "sparse") if distill else None, device=device,
                                         seed=seed, compile=compile, progress=progress, resume=resume)
    times["finetuned"] = stages["finetuned"]["training"]["wall_time_s"]
    summary = build_summary(stages, times, data, percent, sparsity)
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", summary_markdown(summary))
    return summary


def _same_prune(pruned_dir: Path, percent, min_keep, round_to) -> bool:
    try:
        plan = json.loads((pruned_dir / "plan.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (plan.get("percent"), plan.get("min_keep"), plan.get("round_to")) == (percent, min_keep, round_to)


def build_summary(stages: dict, times: dict, data: DataOptions, percent: float, sparsity: float) -> dict:
    base = stages["sparse"]
    rows = {}
    for name, meta in stages.items():
        rows[name] = {
            "accuracy": meta["accuracy"], "params": meta["params"], "macs": meta["macs"], "flops": meta["flops"],
            "params_reduction": 1 - meta["params"] / base["params"],
            "macs_reduction": 1 - meta["macs"] / base["macs"],
            "wall_time_s": times.get(name),
        }
    return {"format": "compress.summary/1", "arch": base["arch"], "arch_kwargs": base["arch_kwargs"],
            "data": data.describe(), "percent": percent, "sparsity": sparsity,
            "channels_before": stages["pruned"]["pruning"]["channels_before"],
            "channels_after": stages["pruned"]["pruning"]["channels_after"],
            "pruned_accuracy_uncalibrated": stages["pruned"]["pruning"].get("accuracy_uncalibrated"),
            "bn_recalibration_images": stages["pruned"]["pruning"].get("bn_recalibration_images", 0),
            "stages": rows, "command": command_line()}


def summary_markdown(s: dict) -> str:
    lines = [f"# Slimming summary: {s['arch']}", "",
             f"Data `{s['data']['spec']}`; λ = {s['sparsity']}; pruned {s['percent']:.0%} of BN channels "
             f"({s['channels_before']} → {s['channels_after']} prunable channels).", "",
             "| stage | accuracy | params | Δ params | MACs | FLOPs (2×MACs) | Δ MACs | wall time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in s["stages"].items():
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
        wall = "" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f} s"
        lines.append(f"| {name} | {acc} | {r['params']:,} | {-r['params_reduction']:+.1%} | {r['macs']:,} | "
                     f"{r['flops']:,} | {-r['macs_reduction']:+.1%} | {wall} |")
    if s.get("bn_recalibration_images") and s.get("pruned_accuracy_uncalibrated") is not None:
        lines += ["", f"The pruned model's BN statistics were re-estimated on {s['bn_recalibration_images']} "
                      f"training images (no weight update); before that it scored "
                      f"{s['pruned_accuracy_uncalibrated']:.2%}."]
    lines += ["", f"Command: `{s['command']}`", ""]
    return "\n".join(lines)
