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
