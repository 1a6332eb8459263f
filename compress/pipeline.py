"""The slimming stages as functions over model directories: train, prune, finetune, and slim (all three).

Each stage writes a complete model directory or nothing that looks complete: `model.json` is
written last, and resumable training state lives beside it until the stage finishes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from compress.artifact import derived_meta, is_model_dir, load_model_dir, read_meta, save_model_dir
from compress.atomic import write_json, write_text
from compress.data import ImageSet, load_dataset
from compress.errors import CompressError
from compress.train import Distill, Recipe, evaluate, finish, fit, is_main_process, pick_device


@dataclass
class DataOptions:
    """A dataset as the stages use it: spec, stratified limits, seed, image size and loading mode; each
    split is loaded once. `model_size` (set by `for_model`) resizes images only when they differ from it."""

    spec: str
    train_limit: int | None = None
    test_limit: int | None = None
    seed: int = 0
    input_size: int | None = None
    mode: str = "auto"
    model_size: int | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def split(self, name: str) -> ImageSet:
        if name not in self._cache:
            limit = self.train_limit if name == "train" else self.test_limit
            load = lambda size: load_dataset(self.spec, name, limit=limit, seed=self.seed,  # noqa: E731
                                             input_size=size, mode=self.mode)
            if self.input_size is None and self.model_size is not None:
                # Data at its own size when that is the model's (no resize, the existing cache); resized to
                # the model's input otherwise, including folders of mixed sizes.
                try:
                    data = load(None)
                except CompressError:
                    data = None
                if data is None or tuple(data.input_size[1:]) != (self.model_size, self.model_size):
                    data = load(self.model_size)
                self._cache[name] = data
            else:
                self._cache[name] = load(self.input_size)
        return self._cache[name]

    def for_model(self, meta: dict) -> "DataOptions":
        """Let a model's recorded input size decide how images are sized when --input-size is not given."""
        if self.input_size is None:
            self.model_size = int(meta["input_size"][-1])
        return self

    def describe(self) -> dict:
        return {"spec": self.spec, "train_limit": self.train_limit, "test_limit": self.test_limit,
                "input_size": self.input_size}


@contextlib.contextmanager
def writing(out: str | Path, inputs=(), data: "DataOptions | None" = None):
    """Refuse an output that would overwrite an input (before any work), hold OUT's write lock so that a
    second writer gets one line naming this one, and turn SIGTERM/SIGHUP into exceptions so cleanup
    runs. Under torchrun only rank 0 writes, so only rank 0 locks."""
    from compress.atomic import signals_as_exceptions
    from compress.guard import check_outputs
    from compress.lock import output_lock

    named = [(label, Path(p)) for label, p in inputs if p is not None]
    if data is not None:
        from compress.data import resolve_spec

        source = Path(resolve_spec(data.spec)).expanduser()
        if source.exists():
            named.append(("--data", source))
    check_outputs(inputs=named, out_dirs=[("--out", Path(out))])
    if not is_main_process():
        yield
        return
    with signals_as_exceptions(), output_lock(out, command_line(), directory=True):
        yield


def sparsity_json(sparsity):
    """The sparsity setting as JSON: λ, or the regularizer's description (mode, budget, ...)."""
    if hasattr(sparsity, "describe"):
        return sparsity.describe()
    return float(sparsity or 0.0)


def sparsity_on(sparsity) -> bool:
    return hasattr(sparsity, "describe") or float(sparsity or 0.0) > 0


def sparsity_label(sparsity) -> str:
    if not hasattr(sparsity, "describe"):
        return f"λ={sparsity}"
    d = sparsity.describe()
    amount = f"pull budget {d['budget']}" if "budget" in d else f"strength {d['strength']}"
    return f"{d['mode']}, {amount}"


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
    if not resume or not is_model_dir(out):
        return False
    if (out / "train_state").exists():
        # model.json is written last and removed before training starts, so with it present the stage
        # finished and was stopped before dropping its resumable state: drop it now.
        finish(out)
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


def model_kwargs(arch: str, arch_kwargs: dict | None, num_classes: int, input_size: int | None) -> dict:
    """Constructor arguments recorded in model.json: what rebuilds exactly this architecture."""
    from compress.models import parse_name
    from compress.models.user import accepts, is_import_path, resolve_class

    kwargs = dict(arch_kwargs or {})
    if is_import_path(arch):
        try:
            cls = resolve_class(arch)
        except ValueError as exc:
            raise CompressError(str(exc)) from None
        if "num_classes" not in kwargs and accepts(cls, "num_classes"):
            kwargs["num_classes"] = num_classes
        return kwargs
    try:
        family, _ = parse_name(arch)
    except ValueError as exc:
        raise CompressError(str(exc)) from None
    if family == "torchvision" and input_size is not None:
        kwargs.setdefault("image_size", int(input_size))
    from compress.models import resolved_kwargs

    return resolved_kwargs(arch, {"num_classes": num_classes, **kwargs})


def check_arch(arch: str, arch_kwargs: dict | None, num_classes: int = 10, input_size: int | None = None) -> None:
    """Fail on a bad architecture name, constructor argument or input size before any data is loaded."""
    from compress.artifact import construct
    from compress.importing import check_input_size

    model = construct(arch, model_kwargs(arch, arch_kwargs, num_classes, input_size))
    check_input_size(model, arch, input_size or 32)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CompressError(f"output {out} exists and is not a directory")


def train_model(arch: str | None, data: DataOptions, out: str | Path, recipe: Recipe, *, sparsity: float = 0.0,
                arch_kwargs: dict | None = None, device=None, seed: int = 0, resume: bool = True,
                compile: bool = False, progress: bool = True, start_from: str | Path | None = None,
                like: str | Path | None = None) -> dict:
    """Train into the model directory `out` (see _train_model); refuses to overwrite an input."""
    with writing(out, [("--from", start_from), ("--like", like)], data):
        return _train_model(arch, data, out, recipe, sparsity=sparsity, arch_kwargs=arch_kwargs, device=device,
                            seed=seed, resume=resume, compile=compile, progress=progress, start_from=start_from,
                            like=like)


def _train_model(arch: str | None, data: DataOptions, out: str | Path, recipe: Recipe, *, sparsity: float = 0.0,
                 arch_kwargs: dict | None = None, device=None, seed: int = 0, resume: bool = True,
                 compile: bool = False, progress: bool = True, start_from: str | Path | None = None,
                 like: str | Path | None = None) -> dict:
    """Train `arch` from scratch, or continue from the weights of the model directory `start_from`
    (sparse training of an already trained network: how slimming is used on a real deployment).

    With `like` (a pruned model directory), train that pruned architecture from a fresh initialization
    on the same compute budget as the unpruned network's `recipe.epochs` ("Scratch-B", Liu et al.,
    ICLR 2019): epochs scale by the MACs ratio, at most doubled, as in that paper.
    """
    out = Path(out)
    if like is not None:
        if start_from is not None:
            raise CompressError("--like and --from exclude each other")
        return _train_like(like, data, out, recipe, sparsity=sparsity, device=device, seed=seed, resume=resume,
                           compile=compile, progress=progress)
    parent = None
    if start_from is not None:
        parent = read_meta(start_from)
        if arch is not None and arch != parent["arch"]:
            raise CompressError(f"--arch {arch} disagrees with {start_from}, which holds {parent['arch']}")
        arch = parent["arch"]
        if data.input_size is None:
            data.input_size = int(parent["input_size"][-1])
    if arch is None:
        raise CompressError("give --arch, or --from a model directory")
    input_size = data.input_size
    import dataclasses

    settings = {"arch": arch, "arch_kwargs": arch_kwargs or {}, "sparsity": sparsity_json(sparsity),
                "epochs": recipe.epochs, "recipe": dataclasses.asdict(recipe), "seed": seed,
                "data": data.describe(), "from": (parent or {}).get("weights_sha256")}
    if _finished(out, resume):
        meta = read_meta(out)
        done = (meta.get("training") or {}).get("settings")
        if done is not None and done != json.loads(json.dumps(settings, default=str)):
            diff = sorted(k for k in settings if done.get(k) != json.loads(json.dumps(settings[k], default=str)))
            raise CompressError(f"{out} holds a model trained with other settings ({', '.join(diff)}); "
                                "use another --out or --no-resume")
        _log(f"{out} is already trained; keeping it")
        return meta
    _check_out_dir(out)
    if parent is None:
        check_arch(arch, arch_kwargs, input_size=input_size)
    train, test = data.split("train"), data.split("test")
    if train.input_size[1:] != test.input_size[1:]:
        raise CompressError(f"train images are {train.input_size}, test images {test.input_size}")
    torch.manual_seed(seed)
    if parent is not None:
        model, parent = load_model_dir(start_from)
        _check_classes(parent, train)
        kwargs = parent["arch_kwargs"]
        mean, std = parent["normalization"]["mean"], parent["normalization"]["std"]
    else:
        from compress.artifact import construct

        kwargs = model_kwargs(arch, arch_kwargs, len(train.classes), train.input_size[-1])
        model = construct(arch, kwargs)
        mean, std = train.channel_stats()
    (out / "model.json").unlink(missing_ok=True)
    t0 = time.time()
    result = fit(model, train, test, out, recipe, mean=mean, std=std, sparsity=sparsity, device=device,
                 seed=seed, resume=resume, compile=compile, progress=progress,
                 desc="sparse" if sparsity_on(sparsity) else "train", tag=_tag(settings))
    if not is_main_process():
        return _sync_and_read(out)
    extra = {"data": data.describe()}
    if parent is not None:
        extra["parent"] = {"path": str(start_from), "sha256": parent.get("weights_sha256"),
                           "params": parent.get("params"), "macs": parent.get("macs"),
                           "accuracy": parent.get("accuracy")}
        if parent.get("widths"):
            extra["widths"] = parent["widths"]
    meta = {
        "arch": arch, "arch_kwargs": kwargs, "classes": train.classes, "input_size": list(train.input_size),
        "normalization": {"mean": mean, "std": std}, "accuracy": result["last"]["test_accuracy"],
        "best_accuracy": result["best"]["test_accuracy"],
        "training": {"recipe": result["recipe"], "sparsity": sparsity_json(sparsity), "seed": seed,
                     "wall_time_s": _wall_time(result, t0), "settings": json.loads(json.dumps(settings, default=str))},
        "command": command_line(), **extra,
    }
    model.cpu()
    saved = save_model_dir(model, out, meta)
    finish(out)
    _sync_and_read(out)
    return saved


def scratch_b_epochs(epochs: int, macs_unpruned: int, macs_pruned: int) -> int:
    """Epochs that spend the unpruned network's training compute on the pruned one, capped at 2×."""
    ratio = macs_unpruned / max(macs_pruned, 1)
    return max(epochs, min(2 * epochs, round(epochs * ratio)))


def _train_like(like, data: DataOptions, out: Path, recipe: Recipe, **kw) -> dict:
    import dataclasses

    from compress.artifact import build_model

    pruned = read_meta(like)
    unpruned_macs = (pruned.get("origin") or {}).get("macs") or (pruned.get("pruning") or {}).get("macs_before")
    if not unpruned_macs:
        raise CompressError(f"{like} records no unpruned MACs (is it a pruned model directory?)")
    epochs = scratch_b_epochs(recipe.epochs, int(unpruned_macs), int(pruned["macs"]))
    budget = {"like": str(like), "base_epochs": recipe.epochs, "epochs": epochs,
              "macs_ratio": round(int(unpruned_macs) / int(pruned["macs"]), 4)}
    _log(f"Scratch-B: {pruned['arch']} at the widths of {like}, {epochs} epochs "
         f"({recipe.epochs} × MACs ratio {budget['macs_ratio']:.2f}, capped at 2×)")
    recipe = dataclasses.replace(recipe, epochs=epochs)
    out = Path(out)
    settings = {"like": pruned.get("weights_sha256"), "epochs": epochs, "data": data.describe(),
                "sparsity": sparsity_json(kw["sparsity"])}
    if _finished(out, kw["resume"]):
        done = (read_meta(out).get("training") or {}).get("settings")
        if done == json.loads(json.dumps(settings, default=str)):
            _log(f"{out} is already trained; keeping it")
            return read_meta(out)
        raise CompressError(f"{out} holds a model trained with other settings; use another --out or --no-resume")
    _check_out_dir(out)
    if data.input_size is None:
        data.input_size = int(pruned["input_size"][-1])
    train, test = data.split("train"), data.split("test")
    _check_classes(pruned, train)
    torch.manual_seed(kw["seed"])
    model = build_model(pruned)
    _fresh_init(model, pruned["arch"])
    norm = pruned["normalization"]
    (out / "model.json").unlink(missing_ok=True)
    t0 = time.time()
    result = fit(model, train, test, out, recipe, mean=norm["mean"], std=norm["std"], sparsity=kw["sparsity"],
                 device=kw["device"], seed=kw["seed"], resume=kw["resume"], compile=kw["compile"],
                 progress=kw["progress"], desc="scratch-B", tag=_tag(settings))
    if not is_main_process():
        return _sync_and_read(out)
    meta = {key: pruned[key] for key in ("arch", "arch_kwargs", "classes", "input_size", "normalization")}
    meta.update(accuracy=result["last"]["test_accuracy"], best_accuracy=result["best"]["test_accuracy"],
                data=data.describe(), command=command_line(), scratch_b=budget,
                origin=pruned.get("origin"),
                training={"recipe": result["recipe"], "sparsity": sparsity_json(kw["sparsity"]), "seed": kw["seed"],
                          "wall_time_s": _wall_time(result, t0),
                          "settings": json.loads(json.dumps(settings, default=str))})
    model.cpu()
    saved = save_model_dir(model, out, meta)
    finish(out)
    _sync_and_read(out)
    return saved


def _fresh_init(model, arch: str) -> None:
    """Initialize every layer the way the architecture family does, so no weight is inherited and
    resized layers are not left with PyTorch's defaults beside re-used ones."""
    from compress.models import parse_name
    from compress.models._common import init_batchnorm, init_conv_linear
    from compress.models.user import is_import_path

    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
        if hasattr(module, "reset_running_stats"):
            module.reset_running_stats()
    if not is_import_path(arch) and parse_name(arch)[0] in ("vgg", "preresnet", "densenet"):
        init_conv_linear(model)
        init_batchnorm(model, 0.5)


def _wall_time(result: dict, t0: float) -> float:
    # A resumed run counts the epochs done before the interruption too.
    return round(sum(r.get("epoch_time_s", 0) for r in result["history"]), 1) or round(time.time() - t0, 1)


def _prune_model(model_dir: str | Path, out: str | Path, *, percent: float, min_keep: float = 0.2,
                min_channels: int = 1, round_to: int | str = 1, compensate: bool = True, plan_path=None,
                data: DataOptions | None = None, recalibrate: int = 2000, device=None,
                target_macs: float | None = None, target_params: float | None = None,
                cost_aware: bool = False, target_latency_ms: float | None = None, backend: str = "ort-cpu") -> dict:
    """Prune a model directory; with `data`, measure accuracy and re-estimate BN statistics on
    `recalibrate` training images (0 disables it). `target_latency_ms` prunes to a p50 latency on
    `backend`, measured on this machine at batch 1 (compress.latency_budget)."""
    from compress.slimming import recalibrate_batchnorm

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
    floor = dict(min_keep=min_keep, min_channels=min_channels, round_to=round_to, compensate=compensate)
    if target_latency_ms is not None:
        from compress.latency_budget import prune_to_latency

        if plan is not None or target_macs is not None or target_params is not None:
            raise CompressError("a latency target excludes a plan and the MACs and parameter targets")
        model, plan = prune_to_latency(model, example, target_latency_ms, backend=backend, cost_aware=cost_aware,
                                       log=_log, **floor)
    else:
        from compress.slimming import prune

        model, plan = prune(model, percent, example, plan=plan, target_macs=target_macs, target_params=target_params,
                            cost_aware=cost_aware, **floor)
    plan["source"] = {"path": str(model_dir), "weights_sha256": meta.get("weights_sha256")}
    accuracy = uncalibrated = None
    recalibrated_on = 0
    exact = _exact_removal(plan, cost_aware)
    if data is not None:
        test = data.for_model(meta).split("test")
        _check_classes(meta, test)
        norm = meta["normalization"]
        dev = pick_device(device)
        accuracy = uncalibrated = evaluate(model, test, norm["mean"], norm["std"], device=dev)["accuracy"]
        if recalibrate > 0 and not exact:
            from compress.data import stratified_subset

            calib = stratified_subset(data.split("train"), recalibrate, seed=data.seed)
            recalibrated_on = len(calib)
            batches = (x for x, _ in calib.batches(250, norm["mean"], norm["std"], train=False, device=dev))
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
                                     "min_keep": plan["min_keep"], "round_to": plan["round_to"],
                                     "budget": plan.get("budget"),
                                     "accuracy_before_pruning": meta.get("accuracy"),
                                     "accuracy_uncalibrated": uncalibrated,
                                     "bn_recalibration_images": recalibrated_on,
                                     "exact_removal": exact,
                                     "wall_time_s": round(time.time() - t0, 1)})
    return save_model_dir(model, out, new_meta)


def _exact_removal(plan: dict, cost_aware: bool) -> bool:
    """Every removed channel had |γ| under ZERO: with β folded into the next layer the network computes what
    it did, so its BN statistics still hold, and re-estimating them on a few thousand images only adds
    noise (measured: −1.9 pp on issue 11's CPU reference, 82.97% → 81.08%). Cost-aware scores are not γ,
    so their threshold says nothing here."""
    from compress.sparsity import ZERO

    return not cost_aware and float(plan.get("threshold", ZERO)) < ZERO


def _check_classes(meta: dict, data: ImageSet) -> None:
    if len(meta["classes"]) != len(data.classes):
        raise CompressError(f"model has {len(meta['classes'])} classes, data has {len(data.classes)}")
    if list(meta["classes"]) != list(data.classes):
        raise CompressError("the data's class names differ from the model's; labels would not line up")
    if tuple(meta["input_size"]) != data.input_size:
        raise CompressError(f"model expects {meta['input_size']} images, data has {list(data.input_size)}")


def _finetune_model(model_dir: str | Path, data: DataOptions, out: str | Path, recipe: Recipe, *,
                   distill_dir=None, temperature: float = 4.0, alpha: float = 0.9, device=None, seed: int = 0,
                   resume: bool = True, compile: bool = False, progress: bool = True, sparsity: float = 0.0) -> dict:
    out = Path(out)
    if Path(model_dir).resolve() == out.resolve():
        raise CompressError("--out must differ from the model directory being fine-tuned")
    model, meta = load_model_dir(model_dir)
    if _finished(out, resume, parent_sha=meta.get("weights_sha256")):
        _log(f"{out} is already fine-tuned; keeping it")
        return read_meta(out)
    train, test = data.for_model(meta).split("train"), data.split("test")
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
                "distill": str(distill_dir), "data": data.describe(), "sparsity": sparsity_json(sparsity)})
    result = fit(model, train, test, out, recipe, mean=norm["mean"], std=norm["std"], device=device, seed=seed,
                 resume=resume, distill=distill, compile=compile, progress=progress, desc="finetune", tag=tag,
                 sparsity=sparsity)
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
    test = data.for_model(meta).split("test")
    _check_classes(meta, test)
    norm = meta["normalization"]
    return evaluate(model, test, norm["mean"], norm["std"], device=pick_device(device))


def _slim(arch: str | None, data: DataOptions, out: str | Path, *, percent: float, sparsity: float,
         train_recipe: Recipe, finetune_recipe: Recipe, arch_kwargs: dict | None = None, min_keep: float = 0.2,
         round_to: int | str = 1, distill: bool = False, device=None, seed: int = 0, compile: bool = False,
         progress: bool = True, resume: bool = True, start_from: str | Path | None = None,
         passes: int = 1, sparse_dir: str | Path | None = None, budget: dict | None = None,
         pretrain_recipe: Recipe | None = None) -> dict:
    """Sparse training → pruning → fine-tuning; re-running continues from the last finished stage.

    With `start_from` (a model directory, e.g. made by ``compress import``), sparse training starts from
    its trained weights instead of from scratch. With `passes` > 1 (the paper's multi-pass scheme),
    prune-and-fine-tune repeats: each pass prunes `percent` of the remaining channels by one global
    threshold, never more than 1 − `min_keep` of any layer, and every fine-tuning but the last keeps the
    sparsity penalty so that the next pass finds polarized γ again. `sparse_dir` puts the sparse stage
    elsewhere than OUT/sparse, so that several runs (pruning ratios) can share one sparse model.
    `budget` ({"target_macs": F} or {"target_params": F}) replaces `percent` for pruning: the global
    threshold is searched so that the pruned network keeps that fraction of the sparse one's cost;
    {"target_latency_ms": MS, "backend": B} keeps the largest MACs fraction whose p50 latency on B, measured
    on this machine, is at most MS (one pass only: a second would start from a model that meets it).
    `pretrain_recipe` first trains the network without sparsity (OUT/pretrained), and sparse training
    then starts from it: sparse fine-tuning of a trained model, which is what polarizes γ without an
    accuracy cost on short schedules (benchmarks/results/sparsity_study.md).
    """
    if passes < 1:
        raise CompressError(f"passes must be >= 1, got {passes}")
    from compress.slimming import resolve_round_to

    # Resolved once here, not only where pruning happens: a resumed run compares it with plan.json's number.
    round_to = resolve_round_to(round_to)
    if budget and "target_latency_ms" in budget:
        from compress.latency_budget import check_latency_backend

        if passes > 1:
            raise CompressError("a latency target prunes once: it cannot be split over passes")
        check_latency_backend(budget.get("backend", "ort-cpu"))
    sparsity = _steer_to(sparsity, percent, budget)
    out = Path(out)
    if start_from is not None:
        arch = read_meta(start_from)["arch"] if arch is None else arch
    else:
        check_arch(arch, arch_kwargs, input_size=data.input_size)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    stages = {}
    total = 1 + 2 * passes + (pretrain_recipe is not None and start_from is None)
    first = 1
    if pretrain_recipe is not None and start_from is None:
        _log(f"[1/{total}] training {arch} without sparsity ({pretrain_recipe.epochs} epochs) → {out / 'pretrained'}")
        stages["pretrained"] = train_model(arch, data, out / "pretrained", pretrain_recipe, arch_kwargs=arch_kwargs,
                                           device=device, seed=seed, compile=compile, progress=progress,
                                           resume=resume)
        times["pretrained"] = stages["pretrained"]["training"]["wall_time_s"]
        start_from, arch_kwargs, first = out / "pretrained", None, 2
    sparse_dir = Path(sparse_dir) if sparse_dir is not None else out / "sparse"
    _log(f"[{first}/{total}] sparse training {arch} ({sparsity_label(sparsity)}, {train_recipe.epochs} epochs) → {sparse_dir}")
    stages["sparse"] = train_model(arch, data, sparse_dir, train_recipe, sparsity=sparsity,
                                   arch_kwargs=arch_kwargs, device=device, seed=seed, compile=compile,
                                   progress=progress, resume=resume, start_from=start_from)
    times["sparse"] = stages["sparse"]["training"]["wall_time_s"]
    _warn_if_collapsed(sparse_dir)
    source = sparse_dir
    for k in range(1, passes + 1):
        suffix = "" if passes == 1 else f"-{k}"
        where = out if passes == 1 else out / f"pass{k}"
        pruned_dir, tuned_dir = where / "pruned", where / "finetuned"
        step = first + 2 * k - 1
        t = time.time()
        _log(f"[{step}/{total}] pruning to {_asked_text(budget, percent)} → {pruned_dir}")
        parent_sha = read_meta(source)["weights_sha256"]
        if resume and _finished(pruned_dir, True, parent_sha=parent_sha) and _same_prune(
                pruned_dir, percent, min_keep, round_to, budget):
            pruned = read_meta(pruned_dir)
        elif is_main_process():
            pruned = prune_model(source, pruned_dir, percent=percent, min_keep=min_keep, round_to=round_to,
                                 data=data, device=device, **(budget or {}))
            _sync_and_read(pruned_dir)
        else:
            pruned = _sync_and_read(pruned_dir)
        stages["pruned" + suffix] = pruned
        times["pruned" + suffix] = pruned["pruning"].get("wall_time_s", round(time.time() - t, 1))
        if pruned.get("accuracy") is not None:
            _log(f"      accuracy right after pruning: {pruned['accuracy']:.2%}")
        keep_sparse = sparsity if k < passes else 0.0
        _log(f"[{step + 1}/{total}] fine-tuning ({finetune_recipe.epochs} epochs"
             f"{', ' + sparsity_label(keep_sparse) if sparsity_on(keep_sparse) else ''}) → {tuned_dir}")
        tuned = finetune_model(pruned_dir, data, tuned_dir, finetune_recipe,
                               distill_dir=sparse_dir if distill else None, device=device, seed=seed,
                               compile=compile, progress=progress, resume=resume, sparsity=keep_sparse)
        stages["finetuned" + suffix] = tuned
        times["finetuned" + suffix] = tuned["training"]["wall_time_s"]
        source = tuned_dir
    summary = build_summary(stages, times, data, percent, sparsity)
    summary["passes"] = passes
    summary["plots"] = write_plots(out, sparse_dir, stages, passes)
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", summary_markdown(summary))
    return summary


def _asked_text(budget: dict | None, percent: float) -> str:
    if not budget:
        return f"{percent:.0%} of channels"
    if "target_latency_ms" in budget:
        return f"p50 latency {budget['target_latency_ms']:g} ms on {budget.get('backend', 'ort-cpu')}"
    return ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in budget.items())


def _steer_to(sparsity, percent: float, budget: dict | None):
    """A sparsity config polarizes γ for the percent this run will prune (its 'auto' controller aims at
    it); under a MACs/params budget the percent is not known in advance and the config's own stays."""
    from compress.sparsity import SparsityConfig

    if isinstance(sparsity, SparsityConfig) and not budget and sparsity.percent != percent:
        return replace(sparsity, percent=percent)
    return sparsity


def write_plots(out: Path, sparse_dir: Path, stages: dict, passes: int) -> list[str]:
    """The γ histogram after each stage (the paper's Figure 4), kept channels per layer and the training
    curves, as PNGs beside summary.md. A plot that fails is reported, never fatal to a finished run."""
    from safetensors.torch import load_file

    from compress import plots
    from compress.artifact import WEIGHTS

    dirs = {"pretrained": out / "pretrained"} if "pretrained" in stages else {}
    dirs["sparse"] = sparse_dir
    for k in range(1, passes + 1):
        where = out if passes == 1 else out / f"pass{k}"
        suffix = "" if passes == 1 else f"-{k}"
        dirs["pruned" + suffix] = where / "pruned"
        dirs["finetuned" + suffix] = where / "finetuned"
    written = []
    try:
        gammas = {}
        for name, d in dirs.items():
            bn_names = {n for n, w in stages[name]["widths"].items() if w["type"] == "BatchNorm2d"}
            state = load_file(str(d / WEIGHTS))
            gammas[name] = [state[f"{n}.weight"] for n in bn_names if f"{n}.weight" in state]
        first_plan = json.loads((dirs["pruned" + ("" if passes == 1 else "-1")] / "plan.json").read_text())
        written.append(plots.gamma_histogram(gammas, out / "gamma_histogram.png",
                                             threshold=first_plan.get("threshold")).name)
        for k in range(1, passes + 1):
            suffix = "" if passes == 1 else f"-{k}"
            plan = json.loads((dirs["pruned" + suffix] / "plan.json").read_text())
            written.append(plots.kept_channels_from_plan(plan, out / f"kept_channels{suffix}.png").name)
        curves = {name: plots.read_metrics(d / "metrics.jsonl") for name, d in dirs.items()
                  if (d / "metrics.jsonl").exists()}
        written.append(plots.training_curves(curves, out / "training_curves.png").name)
    except Exception as exc:  # noqa: BLE001 - plots must not cost a finished run
        _log(f"warning: plots not written: {type(exc).__name__}: {exc}")
    return written


@functools.wraps(_prune_model)
def prune_model(model_dir, out, **kw) -> dict:
    with writing(out, [("MODEL_DIR", model_dir), ("--plan", kw.get("plan_path"))], kw.get("data")):
        return _prune_model(model_dir, out, **kw)


@functools.wraps(_finetune_model)
def finetune_model(model_dir, data, out, recipe, **kw) -> dict:
    with writing(out, [("MODEL_DIR", model_dir), ("--distill", kw.get("distill_dir"))], data):
        return _finetune_model(model_dir, data, out, recipe, **kw)


@functools.wraps(_slim)
def slim(arch, data, out, **kw) -> dict:
    with writing(out, [("--from", kw.get("start_from"))], data):
        return _slim(arch, data, out, **kw)


def _warn_if_collapsed(sparse_dir: Path) -> None:
    """A penalty far too strong for the run (a pull budget spent in a few dozen steps) zeroes nearly every
    γ; every percent then prunes to the floor. Say so: the cure is a smaller --sparsity."""
    from compress import plots

    try:
        last = plots.read_metrics(sparse_dir / "metrics.jsonl")[-1]
    except (OSError, IndexError):
        return
    zero = last.get("gamma_under_1e-3")
    if zero is not None and zero > 0.95:
        _log(f"warning: sparse training left {zero:.0%} of BN γ under 1e-3; pruning will keep only the floor of "
             "each layer. The penalty was too strong for this run: give a smaller --sparsity (a λ such as 1e-4, "
             "or budget:0.2)")


def _same_prune(pruned_dir: Path, percent, min_keep, round_to, budget: dict | None = None) -> bool:
    try:
        plan = json.loads((pruned_dir / "plan.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if (plan.get("min_keep"), plan.get("round_to")) != (min_keep, round_to):
        return False
    if budget:
        recorded = plan.get("budget") or {}
        return all(recorded.get(k) == v for k, v in _as_recorded(budget).items())
    return plan.get("budget") is None and plan.get("percent") == percent


def _as_recorded(budget: dict) -> dict:
    """A run's budget option in the terms plan.json records it, for comparing the two on resume. A latency
    plan made on another machine is kept: its structure was measured there, as the plan says."""
    if "target_latency_ms" in budget:
        return {"target": "latency_ms", "asked": budget["target_latency_ms"],
                "backend": budget.get("backend", "ort-cpu")}
    (key, value), = budget.items()
    return {"target": key.removeprefix("target_"), "asked": value}


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
        if "pruning" in meta and name.startswith("pruned"):
            rows[name]["accuracy_uncalibrated"] = meta["pruning"].get("accuracy_uncalibrated")
    pruned = [m for n, m in stages.items() if n.startswith("pruned")]
    first, last = pruned[0]["pruning"], pruned[-1]["pruning"]
    return {"format": "compress.summary/1", "arch": base["arch"], "arch_kwargs": base["arch_kwargs"],
            "data": data.describe(), "percent": percent, "sparsity": sparsity_json(sparsity),
            "channels_before": first["channels_before"], "channels_after": last["channels_after"],
            "pruned_accuracy_uncalibrated": first.get("accuracy_uncalibrated"),
            "budget": _budget_met(first.get("budget"), stages),
            "bn_recalibration_images": first.get("bn_recalibration_images", 0),
            "exact_removal": bool(first.get("exact_removal")),
            "stages": rows, "command": command_line()}


def _budget_met(budget: dict | None, stages: dict) -> dict | None:
    """The budget asked, and the fraction of the sparse model's cost the final model actually has."""
    if not budget:
        return None
    if budget["target"] == "latency_ms":
        return budget  # fine-tuning keeps the structure, so the latency measured at pruning stands
    key = {"macs": "macs", "params": "params"}[budget["target"]]
    final = [m for n, m in stages.items() if n.startswith("finetuned")][-1]
    return {**budget, "met": final[key] / stages["sparse"][key]}


def _sparsity_text(value) -> str:
    if isinstance(value, dict):
        amount = f"pull budget {value['budget']}" if "budget" in value else f"strength {value.get('strength')}"
        return f"{value.get('mode')} L1, {amount}"
    return f"subgradient L1, λ = {value}"


def _budget_phrase(b: dict) -> str:
    if b["target"] == "latency_ms":
        return f"to a p50 latency of {b['asked']:g} ms ({b['backend']}, batch {b['batch']})"
    return f"to a {b['target']} budget"


def _budget_sentence(b: dict) -> str:
    """The budget asked and met, in one sentence of summary.md."""
    importance = b.get("importance", "|γ|")
    if b["target"] != "latency_ms":
        return (f"Budget: {b['target']} at {b['asked']:.1%} of the sparse model's; met {b['met']:.2%} "
                f"(importance: {importance}).")
    machine = b.get("machine") or {}
    return (f"Budget: p50 latency {b['asked']:g} ms at batch {b['batch']} on {b['backend']} "
            f"({machine.get('cpu_model') or 'this machine'}, threads: {machine.get('threads', '?')}); the sparse model "
            f"ran at {b['full']:.3f} ms, the pruned one at {b['met']:.3f} ms with {b['macs_met']:.1%} of the MACs "
            f"({len(b['candidates'])} candidates tried, {b['iterations']} iterations each; importance: {importance}). "
            f"These latencies hold for that machine, backend and batch, with the ONNX export at opset {b['opset']}.")


def summary_markdown(s: dict) -> str:
    lines = [f"# Slimming summary: {s['arch']}", "",
             f"Data `{s['data']['spec']}`; sparsity {_sparsity_text(s['sparsity'])}; pruned "
             + (_budget_phrase(s["budget"]) if s.get("budget") else f"{s['percent']:.0%} of BN channels")
             + (f" per pass, {s['passes']} passes" if s.get("passes", 1) > 1 else "")
             + f" ({s['channels_before']} → {s['channels_after']} prunable channels).", "",
             "| stage | accuracy | before BN re-estimation | params | Δ params | MACs | FLOPs (2×MACs) | Δ MACs "
             "| wall time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in s["stages"].items():
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
        raw = r.get("accuracy_uncalibrated")
        raw = "" if raw is None or raw == r["accuracy"] else f"{raw:.2%}"
        wall = "" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f} s"
        lines.append(f"| {name} | {acc} | {raw} | {r['params']:,} | {-r['params_reduction']:+.1%} | {r['macs']:,} | "
                     f"{r['flops']:,} | {-r['macs_reduction']:+.1%} | {wall} |")
    if s.get("budget"):
        lines += ["", _budget_sentence(s["budget"])]
    if s.get("bn_recalibration_images"):
        lines += ["", f"Pruned models' BN statistics were re-estimated on {s['bn_recalibration_images']} "
                      "training images (no weight update); the column before it shows the accuracy right after "
                      "pruning without that."]
    elif s.get("exact_removal"):
        lines += ["", "Pruning removed only channels whose |γ| was under 1e-3 (β folded into the next layer), so "
                      "the BN statistics were kept as trained, without re-estimation."]
    if s.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in s["plots"]]
    lines += ["", f"Command: `{s['command']}`", ""]
    return "\n".join(lines)
