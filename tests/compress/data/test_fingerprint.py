"""The data fingerprint: a finished stage is kept, and an interrupted one resumed, only on the data it was
trained on."""

import json

import pytest
from click.testing import CliRunner
from tests_support import make_image_folder

from compress.cli import main
from compress.data.fingerprint import as_recorded, data_fingerprint


def test_a_folder_fingerprint_follows_paths_and_sizes_not_where_it_lies(tmp_path):
    import shutil

    a = make_image_folder(tmp_path / "a")
    shutil.copytree(a, tmp_path / "copy")  # other mtimes, same files
    before = data_fingerprint(a)
    assert data_fingerprint(tmp_path / "copy") == before
    (a / "train" / "cat" / "0.png").rename(a / "train" / "dog" / "moved.png")  # a label changed
    assert data_fingerprint(a) != before
    (tmp_path / "x.tar").write_bytes(b"x" * 3_000_000)
    first = data_fingerprint(tmp_path / "x.tar")
    (tmp_path / "y.tar").write_bytes(b"x" * 2_999_999 + b"y")
    assert data_fingerprint(tmp_path / "y.tar") != first


def test_a_stage_trained_on_other_images_is_refused_not_kept(tmp_path):
    """Swapping the folder under the same --data kept every stage ("already trained; keeping it")."""
    data = make_image_folder(tmp_path / "imgs", per_class=4, size=16)
    args = ["train", "--arch", "vgg11", "--width", "0.0625", "--data", str(data), "--epochs", "1", "--batch-size",
            "8", "--device", "cpu", "--out", str(tmp_path / "m")]
    env = {"COMPRESS_CACHE": str(tmp_path / "cache")}
    assert CliRunner().invoke(main, args, env=env).exit_code == 0
    kept = CliRunner().invoke(main, args, env=env)
    assert kept.exit_code == 0 and "already trained; keeping it" in kept.output
    (data / "train" / "cat").rename(data / "train" / "tmp")  # the labels of the two classes swapped
    (data / "train" / "dog").rename(data / "train" / "cat")
    (data / "train" / "tmp").rename(data / "train" / "dog")
    (data / "train" / "cat" / "0.png").unlink()
    refused = CliRunner().invoke(main, args, env=env)
    assert refused.exit_code == 2 and "holds a model trained with other settings (data)" in refused.output


def test_settings_recorded_before_fingerprints_compare_without_one():
    current = {"epochs": 1, "data": {"spec": "imgs", "fingerprint": "folder:ab"}}
    old = {"epochs": 1, "data": {"spec": "imgs"}}
    assert as_recorded(current, old) == old
    assert as_recorded(current, {"epochs": 1, "data": {"spec": "imgs", "fingerprint": "folder:cd"}}) == current
    same_images = {"epochs": 1, "data": {"spec": "/abs/imgs", "fingerprint": "folder:ab"}}
    assert as_recorded(current, same_images) == same_images  # the same files under another spelling


@pytest.mark.parametrize("how", ["saved before fingerprints", "another spelling of --data"])
def test_an_interrupted_run_is_resumed_not_started_over(tmp_path, monkeypatch, capsys, how):
    """Its tag hashes the settings: state saved without the fingerprint, or under `--data imgs` resumed as
    `--data /abs/imgs`, had another tag and was deleted ("starting over"), hours of training with it."""
    import torch
    from tests_support import stopped_after_first_save

    from compress.artifact import save_model_dir
    from compress.data.options import DataOptions
    from compress.models import create_model
    from compress.stages._run import RunOptions, settings_tag
    from compress.stages.finetune import finetune
    from compress.training import Recipe

    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "imgs", per_class=4, size=32)
    torch.manual_seed(0)
    save_model_dir(create_model("vgg11", num_classes=2, width=0.0625), tmp_path / "m",
                   {"arch": "vgg11", "arch_kwargs": {"num_classes": 2, "width": 0.0625}, "classes": ["cat", "dog"],
                    "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    recipe, run = Recipe.named("fast", epochs=2, batch_size=4), RunOptions(progress=False)
    stopped_after_first_save(monkeypatch, lambda: finetune(tmp_path / "m", DataOptions("imgs"), tmp_path / "ft",
                                                           recipe, run=run))
    spec = "imgs"
    if how == "saved before fingerprints":
        state_file = tmp_path / "ft" / "train_state" / "state.json"
        state = json.loads(state_file.read_text())
        state["settings"]["data"].pop("fingerprint")
        state["tag"] = settings_tag(state["settings"])
        state_file.write_text(json.dumps(state))
    else:
        spec = str(tmp_path / "imgs")
    first_epoch = (tmp_path / "ft" / "metrics.jsonl").read_text()
    capsys.readouterr()
    finetune(tmp_path / "m", DataOptions(spec), tmp_path / "ft", recipe, run=run)
    assert "starting over" not in capsys.readouterr().err
    assert (tmp_path / "ft" / "metrics.jsonl").read_text().startswith(first_epoch)


def test_what_the_loader_does_not_read_is_not_data_and_what_it_follows_is(tmp_path, monkeypatch):
    import os

    import pytest

    from compress.data.options import DataOptions
    from compress.errors import CompressError

    data = make_image_folder(tmp_path / "real")
    linked = tmp_path / "linked"
    for split in ("train", "test"):
        (linked / split).mkdir(parents=True)
        for cls in ("cat", "dog"):
            os.symlink(data / split / cls, linked / split / cls)  # an ImageNet subset built of links
    before = data_fingerprint(linked)
    assert before == data_fingerprint(data)  # the links were followed: the same images
    (data / "train" / "cat" / "0.png").rename(data / "train" / "dog" / "moved.png")
    assert data_fingerprint(linked) != before
    after = data_fingerprint(linked)
    (data / "README.txt").write_text("notes")
    (data / "train" / "cat" / "Thumbs.db").write_bytes(b"x")
    assert data_fingerprint(linked) == after
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CompressError, match="not a regular file"):
        data_fingerprint(tmp_path / "fifo")
    monkeypatch.delenv("COMPRESS_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar10").mkdir()  # torchvision's own root: the loader downloads, it never reads this folder
    assert DataOptions("cifar10").describe()["fingerprint"] is None
