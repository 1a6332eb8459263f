"""What the stages share: the training tail written once (fit → model.json last → state dropped), the
output guard (COMPRESS_DATA's dataset included) and the resume checks."""

import json
import os

import pytest
import torch

from compress.data import load_dataset
from compress.data.options import DataOptions
from compress.errors import CompressError
from compress.models import create_model
from compress.stages._run import Fitting, RunOptions, check_classes, finished, fit_and_save, writing
from compress.training import Recipe
from tests_support import make_image_folder


@pytest.fixture()
def images(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    return make_image_folder(tmp_path / "imgs", per_class=4, size=32)


def test_the_training_tail_writes_model_json_last_and_drops_the_resumable_state(tmp_path, images):
    torch.manual_seed(0)
    model = create_model("vgg11", num_classes=2, width=0.0625)
    train, test = load_dataset(str(images), "train"), load_dataset(str(images), "test")
    seen = {}

    def meta_for(result, wall):
        assert not (tmp_path / "out" / "model.json").exists()  # written after fit, from what fit returned
        seen.update(result=result, wall=wall)
        return {"arch": "vgg11", "arch_kwargs": {"num_classes": 2, "width": 0.0625}, "classes": train.classes,
                "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
                "accuracy": result["last"]["test_accuracy"]}

    job = Fitting(model, train, test, Recipe.named("fast", epochs=1, batch_size=4), [0.5] * 3, [0.25] * 3,
                  desc="test", settings={"name": "t1"})
    saved = fit_and_save(tmp_path / "out", job, RunOptions(progress=False), meta_for)
    out = tmp_path / "out"
    assert json.loads((out / "model.json").read_text()) == saved
    assert saved["accuracy"] == seen["result"]["last"]["test_accuracy"] and seen["wall"] >= 0
    assert len(seen["result"]["history"]) == 1 and (out / "metrics.jsonl").is_file()
    assert not (out / "train_state").exists()
    assert saved["params"] > 0 and len(saved["weights_sha256"]) == 64
    assert saved["training"] == {"precision": "fp32"}  # added even where meta_for wrote no training record
    assert next(model.parameters()).device.type == "cpu"
    assert finished(out, resume=True) and not finished(out, resume=False)
    with pytest.raises(CompressError, match="holds a model made from other weights than its parent has now"):
        finished(out, resume=True, parent_sha="0" * 64)  # redone, it would replace a finished model unasked


def test_the_guard_protects_the_dataset_compress_data_names(tmp_path, images, monkeypatch):
    from compress.guard import OutputOverlapError

    monkeypatch.setenv("COMPRESS_DATA", str(images))
    with pytest.raises(OutputOverlapError, match="--data"):
        with writing(images / "train", data=DataOptions("cifar10")):
            pass
    with pytest.raises(OutputOverlapError, match="--out .* is the input model directory MODEL_DIR"):
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "model.json").write_text("{}")
        with writing(tmp_path / "m", [("MODEL_DIR", tmp_path / "m")]):
            pass
    with writing(tmp_path / "new", [("MODEL_DIR", tmp_path / "m")], DataOptions("cifar10")):
        assert (tmp_path / "new" / ".lock").is_file()
    assert not (tmp_path / "new").exists()  # nothing written: the lock leaves no empty directory


def test_data_that_does_not_line_up_with_the_model_is_refused():
    class Data:
        classes, input_size = ["a", "b"], (3, 32, 32)

    meta = {"classes": ["a", "b"], "input_size": [3, 32, 32]}
    check_classes(meta, Data())
    with pytest.raises(CompressError, match="model has 3 classes, data has 2"):
        check_classes({**meta, "classes": ["a", "b", "c"]}, Data())
    with pytest.raises(CompressError, match="class names differ"):
        check_classes({**meta, "classes": ["b", "a"]}, Data())
    with pytest.raises(CompressError, match=r"model expects \[3, 48, 48\] images"):
        check_classes({**meta, "input_size": [3, 48, 48]}, Data())


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EROFS"])
def test_a_checkpoint_that_cannot_be_written_is_one_line_naming_the_file(tmp_path, images, monkeypatch, errno_name):
    """A full disk while training printed safetensors' or the OS's raw error (exit 1), where prune, export
    and quantize named the file in one line."""
    import errno

    from click.testing import CliRunner

    import compress.training as training
    from compress.cli import main

    def full(state_dir, *a, **k):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)),
                      str(state_dir / "model-1.safetensors"))

    monkeypatch.setattr(training, "_save_state", full)
    r = CliRunner().invoke(main, ["train", "--arch", "vgg11", "--width", "0.0625", "--data", str(images),
                                  "--epochs", "1", "--recipe", "fast", "--batch-size", "4", "--device", "cpu",
                                  "--out", str(tmp_path / "t")])
    assert r.exit_code == 2, r.output
    assert f"cannot write {tmp_path / 't' / 'train_state' / 'model-1.safetensors'}: " in r.output
    assert "it goes on from its last saved stage or epoch" in r.output


def test_a_missing_input_is_not_called_a_failed_write(tmp_path):
    with pytest.raises(FileNotFoundError):
        with writing(tmp_path / "out"):
            open(tmp_path / "absent.bin")


def test_taking_a_stage_folder_removes_what_a_killed_run_left(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_state").mkdir()
    for name in (".model.safetensors.abcd1234.tmp", ".summary.json.x1y2z3w4.tmp", ".other.onnx.abcd1234.tmp",
                 "train_state/.model-3.safetensors.q1w2e3r4.tmp", "train_state/.state.json.q1w2e3r4.tmp"):
        (out / name).write_text("left by kill -9")
    with writing(out):
        pass
    assert sorted(os.listdir(out)) == [".other.onnx.abcd1234.tmp", "train_state"]
    assert os.listdir(out / "train_state") == []
