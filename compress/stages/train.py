"""The training stage: an architecture from scratch, a model directory's weights trained on (sparse
training of a trained network: how slimming is used on a real deployment), or a pruned architecture
from a fresh initialization (Scratch-B). Writes one model directory; model.json last.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from compress.artifact import load_model_dir, read_meta
from compress.data.options import DataOptions
from compress.errors import CompressError
from compress.sparsity import SparsityConfig
from compress.stages._run import (
    Fitting,
    RunOptions,
    as_json,
    check_classes,
    check_out_dir,
    command_line,
    finished,
    fit_and_save,
    kept_stage,
    log,
    sparsity_json,
    sparsity_on,
    writing,
)
from compress.training import Recipe


def train(arch: str | None, data: DataOptions, out: str | Path, recipe: Recipe, *, sparsity=0.0,
          arch_kwargs: dict | None = None, start_from: str | Path | None = None, like: str | Path | None = None,
          run: RunOptions = RunOptions()) -> dict:
    """Train into the model directory `out`; returns its model.json. Refuses to overwrite an input.

    `arch` (a registry name or ``package.module:Class``) is trained from scratch; with `start_from` (a
    model directory) training continues from its weights. With `like` (a pruned model directory), its
    pruned architecture is trained from a fresh initialization on the unpruned network's compute budget
    (Scratch-B, Liu et al., ICLR 2019): `recipe.epochs` scaled by the MACs ratio, at most doubled.
    `sparsity` is λ (the paper's subgradient L1 on BN γ) or a SparsityConfig. Re-running a finished
    stage with the same settings keeps it; other settings are refused.
    """
    out = Path(out)
    if isinstance(sparsity, SparsityConfig):
        sparsity.check_ready()
    with writing(out, [("--from", start_from), ("--like", like)], data):
        if like is not None:
            if start_from is not None:
                raise CompressError("--like and --from exclude each other")
            if arch_kwargs:
                raise CompressError("--like takes the architecture and its widths from its model directory: drop "
                                    "--arch-kwargs/--width")
            if arch is not None:
                held = read_meta(like)["arch"]
                if arch != held:
                    raise CompressError(f"--arch {arch} disagrees with {like}, which holds {held}")
            return _train_like(Path(like), data, out, recipe, sparsity, run)
        return _train(arch, data, out, recipe, sparsity, arch_kwargs, start_from, run)


def _train(arch, data: DataOptions, out: Path, recipe: Recipe, sparsity, arch_kwargs, start_from,
           run: RunOptions) -> dict:
    parent = None
    if start_from is not None:
        parent = read_meta(start_from)
        if arch is not None and arch != parent["arch"]:
            raise CompressError(f"--arch {arch} disagrees with {start_from}, which holds {parent['arch']}")
        arch = parent["arch"]
        data = data.for_model(parent)
    if arch is None:
        raise CompressError("give --arch, or --from a model directory")
    settings = {"arch": arch, "arch_kwargs": arch_kwargs or {}, "sparsity": sparsity_json(sparsity),
                "epochs": recipe.epochs, "recipe": dataclasses.asdict(recipe), "seed": run.seed,
                "data": data.describe(), "from": (parent or {}).get("weights_sha256")}
    if finished(out, run.resume):
        return _kept(out, settings, run)
    check_out_dir(out)
    if parent is None:
        check_arch(arch, arch_kwargs, input_size=data.input_size)
    train_set, test_set = data.split("train"), data.split("test")
    if train_set.input_size[1:] != test_set.input_size[1:]:
        raise CompressError(f"train images are {train_set.input_size}, test images {test_set.input_size}")
    torch.manual_seed(run.seed)
    if parent is not None:
        model, parent = load_model_dir(start_from)
        check_classes(parent, train_set)
        kwargs, norm = parent["arch_kwargs"], parent["normalization"]
        mean, std = norm["mean"], norm["std"]
    else:
        from compress.artifact import construct

        kwargs = model_kwargs(arch, arch_kwargs, len(train_set.classes), train_set.input_size[-1])
        model = construct(arch, kwargs)
        mean, std = train_set.channel_stats()
    extra = {"data": data.describe(), **_parent_record(parent, start_from)}

    def meta_for(result: dict, wall: float) -> dict:
        return {"arch": arch, "arch_kwargs": kwargs, "classes": train_set.classes,
                "input_size": list(train_set.input_size), "normalization": {"mean": mean, "std": std},
                "accuracy": result["last"]["test_accuracy"], "best_accuracy": result["best"]["test_accuracy"],
                "training": {"recipe": result["recipe"], "sparsity": sparsity_json(sparsity), "seed": run.seed,
                             "wall_time_s": wall, "settings": as_json(settings)},
                "command": command_line(), **extra}

    job = Fitting(model, train_set, test_set, recipe, mean, std, sparsity=sparsity,
                  desc="sparse" if sparsity_on(sparsity) else "train", settings=settings)
    return fit_and_save(out, job, run, meta_for)


def _kept(out: Path, settings: dict, run: RunOptions) -> dict:
    return kept_stage(out, settings, run, "trained")


def _parent_record(parent: dict | None, start_from) -> dict:
    if parent is None:
        return {}
    extra = {"parent": {"path": str(start_from), "sha256": parent.get("weights_sha256"),
                        "params": parent.get("params"), "macs": parent.get("macs"),
                        "accuracy": parent.get("accuracy")}}
    if parent.get("widths"):
        extra["widths"] = parent["widths"]
    return extra


def scratch_b_epochs(epochs: int, macs_unpruned: int, macs_pruned: int) -> int:
    """Epochs that spend the unpruned network's training compute on the pruned one, capped at 2×."""
    ratio = macs_unpruned / max(macs_pruned, 1)
    return max(epochs, min(2 * epochs, round(epochs * ratio)))


def _train_like(like: Path, data: DataOptions, out: Path, recipe: Recipe, sparsity, run: RunOptions) -> dict:
    from compress.artifact import build_model

    pruned = read_meta(like)
    unpruned_macs = (pruned.get("origin") or {}).get("macs") or (pruned.get("pruning") or {}).get("macs_before")
    if not unpruned_macs:
        raise CompressError(f"{like} records no unpruned MACs (is it a pruned model directory?)")
    epochs = scratch_b_epochs(recipe.epochs, int(unpruned_macs), int(pruned["macs"]))
    budget = {"like": str(like), "base_epochs": recipe.epochs, "epochs": epochs,
              "macs_ratio": round(int(unpruned_macs) / int(pruned["macs"]), 4)}
    log(f"Scratch-B: {pruned['arch']} at the widths of {like}, {epochs} epochs "
        f"({recipe.epochs} × MACs ratio {budget['macs_ratio']:.2f}, capped at 2×)")
    settings = {"like": pruned.get("weights_sha256"), "epochs": epochs, "data": data.describe(),
                "sparsity": sparsity_json(sparsity), "seed": run.seed,
                "recipe": dataclasses.asdict(dataclasses.replace(recipe, epochs=epochs))}
    if finished(out, run.resume):
        return _kept(out, settings, run)
    check_out_dir(out)
    data = data.for_model(pruned)
    train_set, test_set = data.split("train"), data.split("test")
    check_classes(pruned, train_set)
    torch.manual_seed(run.seed)
    model = build_model(pruned, where=str(Path(like) / "model.json"))
    _fresh_init(model, pruned["arch"])
    norm = pruned["normalization"]

    def meta_for(result: dict, wall: float) -> dict:
        meta = {key: pruned[key] for key in ("arch", "arch_kwargs", "classes", "input_size", "normalization")}
        meta.update(accuracy=result["last"]["test_accuracy"], best_accuracy=result["best"]["test_accuracy"],
                    data=data.describe(), command=command_line(), scratch_b=budget, origin=pruned.get("origin"),
                    training={"recipe": result["recipe"], "sparsity": sparsity_json(sparsity), "seed": run.seed,
                              "wall_time_s": wall, "settings": as_json(settings)})
        return meta

    job = Fitting(model, train_set, test_set, dataclasses.replace(recipe, epochs=epochs), norm["mean"], norm["std"],
                  sparsity=sparsity, desc="scratch-B", settings=settings)
    return fit_and_save(out, job, run, meta_for)


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


def model_kwargs(arch: str, arch_kwargs: dict | None, num_classes: int, input_size: int | None) -> dict:
    """Constructor arguments recorded in model.json: what rebuilds exactly this architecture."""
    from compress.models import parse_name, resolved_kwargs
    from compress.models.user import accepts, is_import_path, resolve_class

    kwargs = dict(arch_kwargs or {})
    given = kwargs.get("num_classes")
    if given is not None and given != num_classes:
        # found only when the trained model was saved: a finished-looking folder that no command could read
        raise CompressError(f"--arch-kwargs gives num_classes {given!r}, but the data has {num_classes} classes; "
                            "leave num_classes out: it is the data's")
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
    return resolved_kwargs(arch, {"num_classes": num_classes, **kwargs})


def check_arch(arch: str, arch_kwargs: dict | None, num_classes: int = 10, input_size: int | None = None):
    """Fail on a bad architecture name, constructor argument or input size before any data is loaded;
    returns the model built (untrained, in eval mode)."""
    from compress.artifact import construct
    from compress.importing import check_input_size

    num_classes = (arch_kwargs or {}).get("num_classes", num_classes)  # the data's count is checked later
    model = construct(arch, model_kwargs(arch, arch_kwargs, num_classes, input_size))
    check_input_size(model, arch, input_size or 32)
    return model
