"""The fine-tuning stage (optionally distilled from a teacher model directory), and evaluation of a model
directory on a dataset's test split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compress.artifact import derived_meta, load_model_dir, read_meta
from compress.data.options import DataOptions
from compress.errors import CompressError
from compress.stages._run import Fitting, RunOptions, as_json, check_classes, command_line, finished, fit_and_save
from compress.stages._run import kept_stage, sparsity_json, writing
from compress.training import Distill, Recipe, evaluate, pick_device


def finetune(model_dir: str | Path, data: DataOptions, out: str | Path, recipe: Recipe, *,
             distill_dir: str | Path | None = None, temperature: float = 4.0, alpha: float = 0.9, sparsity=0.0,
             run: RunOptions = RunOptions()) -> dict:
    """Fine-tune the model directory `model_dir` into `out`; returns its model.json.

    With `distill_dir` (a teacher model directory predicting the same classes) the loss also learns its
    soft targets at `temperature`, weighted `alpha` (Hinton et al.). `sparsity` keeps the L1 penalty on
    (between passes of multi-pass slimming). A finished `out` made from the same weights is kept.
    """
    with writing(out, [("MODEL_DIR", model_dir), ("--distill", distill_dir)], data):
        return _finetune(Path(model_dir), data, Path(out), recipe, (distill_dir, temperature, alpha), sparsity, run)


def _finetune(model_dir: Path, data: DataOptions, out: Path, recipe: Recipe, teacher: tuple, sparsity,
              run: RunOptions) -> dict:
    distill_dir, temperature, alpha = teacher
    model, meta = load_model_dir(model_dir)
    # Everything that makes the fine-tuned model what it is: a finished one made with other settings is
    # refused (a changed --finetune-epochs used to keep the old model under the new command line), and an
    # interrupted one is resumed only with the same.
    teacher_sha = read_meta(distill_dir).get("weights_sha256") if distill_dir is not None else None
    settings = {"parent": meta.get("weights_sha256"), "recipe": dataclasses.asdict(recipe), "seed": run.seed,
                "distill": {"teacher": teacher_sha, "temperature": temperature, "alpha": alpha} if distill_dir else None,
                "data": data.describe(), "sparsity": sparsity_json(sparsity)}
    if finished(out, run.resume, parent_sha=meta.get("weights_sha256")):
        return kept_stage(out, settings, run, "fine-tuned")
    data = data.for_model(meta)
    train, test = data.split("train"), data.split("test")
    check_classes(meta, train)
    distill = None
    if distill_dir is not None:
        teacher_model, tmeta = load_model_dir(distill_dir)
        if tmeta["classes"] != meta["classes"]:
            raise CompressError(f"teacher {distill_dir} predicts other classes than the student")
        distill = Distill(teacher_model, temperature, alpha)
    norm = meta["normalization"]
    extra = {"pruning": meta["pruning"]} if "pruning" in meta else {}

    def meta_for(result: dict, wall: float) -> dict:
        return derived_meta(meta, model_dir, accuracy=result["last"]["test_accuracy"],
                            best_accuracy=result["best"]["test_accuracy"], command=command_line(),
                            training={"recipe": result["recipe"], "seed": run.seed, "wall_time_s": wall,
                                      "distilled_from": str(distill_dir) if distill_dir else None,
                                      "settings": as_json(settings)},
                            data=data.describe(), **extra)

    job = Fitting(model, train, test, recipe, norm["mean"], norm["std"], sparsity=sparsity, desc="finetune",
                  settings=settings, distill=distill)
    return fit_and_save(out, job, run, meta_for)


def evaluate_model_dir(model_dir: str | Path, data: DataOptions, device: str | None = None) -> dict:
    """Accuracy of a model directory on `data`'s test split, sized for the model."""
    model, meta = load_model_dir(model_dir)
    test = data.for_model(meta).split("test")
    check_classes(meta, test)
    norm = meta["normalization"]
    return evaluate(model, test, norm["mean"], norm["std"], device=pick_device(device))
