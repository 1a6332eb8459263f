"""The fine-tuning stage: a model directory trained on into another, kept on re-run, refused onto itself or
with a teacher of other classes; and the evaluation of a model directory."""

import json

import pytest
import torch

from compress.artifact import save_model_dir
from compress.data.options import DataOptions
from compress.errors import CompressError
from compress.models import create_model
from compress.stages._run import RunOptions
from compress.stages.finetune import evaluate_model_dir, finetune
from compress.training import Recipe
from tests_support import make_image_folder

RECIPE = Recipe.named("fast", epochs=1, batch_size=4)


def _model_dir(path, classes=("cat", "dog")):
    torch.manual_seed(0)
    model = create_model("vgg11", num_classes=len(classes), width=0.0625)
    return save_model_dir(model, path, {"arch": "vgg11", "arch_kwargs": {"num_classes": len(classes), "width": 0.0625},
                                        "classes": list(classes), "input_size": [3, 32, 32],
                                        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                                        "pruning": {"percent": 0.5}})


@pytest.fixture()
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    make_image_folder(tmp_path / "imgs", per_class=4, size=32)
    _model_dir(tmp_path / "m")
    return tmp_path


def test_a_finetuned_directory_records_its_parent_and_is_kept_on_re_run(work):
    data = DataOptions(str(work / "imgs"))
    meta = finetune(work / "m", data, work / "ft", RECIPE, run=RunOptions(progress=False))
    parent = json.loads((work / "m" / "model.json").read_text())
    assert meta["parent"]["sha256"] == parent["weights_sha256"] and meta["pruning"] == {"percent": 0.5}
    assert meta["training"]["distilled_from"] is None and meta["data"]["input_size"] == 32
    assert data.model_size is None  # the caller's options are not changed by sizing them for the model
    stamp = (work / "ft" / "model.json").stat().st_mtime_ns
    assert finetune(work / "m", data, work / "ft", RECIPE, run=RunOptions(progress=False)) == meta
    assert (work / "ft" / "model.json").stat().st_mtime_ns == stamp
    evaluated = evaluate_model_dir(work / "ft", data)
    assert evaluated["images"] == 8 and evaluated["accuracy"] == pytest.approx(meta["accuracy"], abs=1e-9)


def test_onto_itself_or_from_a_teacher_of_other_classes_is_refused(work):
    data = DataOptions(str(work / "imgs"))
    with pytest.raises(CompressError, match="--out .* is the input model directory MODEL_DIR"):
        finetune(work / "m", data, work / "m", RECIPE)
    _model_dir(work / "teacher", classes=("ant", "bee"))
    with pytest.raises(CompressError, match="predicts other classes than the student"):
        finetune(work / "m", data, work / "ft", RECIPE, distill_dir=work / "teacher")
    assert not (work / "ft").exists()


def test_a_finished_fine_tune_made_with_other_settings_is_refused_not_kept(work):
    """A finished fine-tune was kept whatever --epochs, --lr or --distill now said (only its parent was
    compared), and slim then wrote the new command line into its summary."""
    data = DataOptions(str(work / "imgs"))
    finetune(work / "m", data, work / "ft", RECIPE, run=RunOptions(progress=False))
    stamp = (work / "ft" / "model.json").stat().st_mtime_ns
    for recipe, run in ((Recipe.named("fast", epochs=2, batch_size=4), RunOptions(progress=False)),
                        (RECIPE, RunOptions(progress=False, seed=5))):
        with pytest.raises(CompressError, match=r"holds a model trained with other settings \((recipe|seed)\)"):
            finetune(work / "m", data, work / "ft", recipe, run=run)
    assert (work / "ft" / "model.json").stat().st_mtime_ns == stamp
    finetune(work / "m", data, work / "ft2", RECIPE, run=RunOptions(progress=False, resume=False))


def test_an_interrupted_fine_tune_is_not_discarded_by_a_rerun_with_other_settings(work, monkeypatch):
    """A rerun with a mistyped option deleted the interrupted run's state before training one step."""
    from tests_support import stopped_after_first_save

    data = DataOptions(str(work / "imgs"))
    two = Recipe.named("fast", epochs=2, batch_size=4)
    stopped_after_first_save(monkeypatch, lambda: finetune(work / "m", data, work / "ft", two,
                                                           run=RunOptions(progress=False)))
    state = work / "ft" / "train_state" / "state.json"
    before = state.read_bytes()
    with pytest.raises(CompressError, match=r"holds an interrupted run with other settings \(recipe\); rerun"):
        finetune(work / "m", data, work / "ft", Recipe.named("fast", epochs=3, batch_size=4),
                 run=RunOptions(progress=False))
    assert state.read_bytes() == before
    meta = finetune(work / "m", data, work / "ft", two, run=RunOptions(progress=False))  # resumes
    assert len((work / "ft" / "metrics.jsonl").read_text().splitlines()) == 2 and meta["training"]["settings"]
