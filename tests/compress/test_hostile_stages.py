"""Hostile inputs for the slimming stages (train, prune, finetune, slim, import): refused in one line,
before any work, with nothing changed or left behind."""

import json
import math
import shutil

import pytest
from hostile_support import (
    CLASSES,
    assert_refused,
    invoke,
    make_images,
    make_model_dir,
    refused_unchanged,
    snapshot,
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    make_model_dir(root / "vgg")
    make_images(root / "data", classes=tuple(CLASSES))
    return root


@pytest.fixture
def work(tmp_path, built):
    w = tmp_path / "w"
    shutil.copytree(built, w, symlinks=True)
    return w


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize("option,value", [("--lr", "nan"), ("--lr", "inf"), ("--sparsity", "inf"),
                                          ("--sparsity", "nan"), ("--weight-decay", "-inf"), ("--width", "nan")])
def test_train_refuses_non_finite_numbers(work, option, value):
    refused_unchanged(work, ["train", "--arch", "vgg11", "--data", work / "data", "--out", work / "t",
                             option, value], option)


@pytest.mark.parametrize("option,value", [("--percent", "nan"), ("--percent", "1.5"), ("--min-keep", "inf"),
                                          ("--target-macs", "nan"), ("--target-macs", "0")])
def test_prune_refuses_impossible_numbers(work, option, value):
    refused_unchanged(work, ["prune", work / "vgg", "--out", work / "p", option, value], option)


@pytest.mark.parametrize("extra,needles", [
    (["--target-latency", "2", "--percent", "0.5"], ["give one of", "--target-latency"]),
    (["--target-latency", "2", "--target-macs", "0.5"], ["give one of"]),
    (["--target-latency", "2", "--plan", "plan.json"], ["give one of"]),
    (["--backend", "openvino", "--percent", "0.5"], ["--backend", "give --target-latency"]),
])
def test_prune_takes_one_budget_and_a_backend_only_with_a_latency_target(work, extra, needles):
    refused_unchanged(work, ["prune", work / "vgg", "--out", work / "p", *extra], *needles, usage=True)


@pytest.mark.parametrize("option,value", [("--target-latency", "0"), ("--target-latency", "nan"),
                                          ("--target-latency", "-1")])
def test_prune_refuses_a_latency_that_is_not_a_positive_number(work, option, value):
    refused_unchanged(work, ["prune", work / "vgg", "--out", work / "p", option, value], option, usage=True)


@pytest.mark.parametrize("backend,needle", [("trt", "measured on ort-cpu"), ("ort-cuda", "got backend 'ort-cuda'"),
                                            ("onnx", "got backend 'onnx'")])
def test_prune_refuses_a_backend_latency_cannot_be_measured_on(work, backend, needle):
    refused_unchanged(work, ["prune", work / "vgg", "--out", work / "p", "--target-latency", "2",
                             "--backend", backend], needle)


@pytest.mark.parametrize("extra,needles", [
    (["--target-latency", "2", "--percent", "0.5"], ["not --percent and --target-latency"]),
    (["--target-latency", "2", "--target-params", "0.5"], ["not --target-params and --target-latency"]),
    (["--target-macs", "0.5", "--percent", "0.5"], ["not --percent and --target-macs"]),
    (["--target-latency", "2", "--passes", "2"], ["--target-latency prunes once"]),
    (["--backend", "ort-cpu"], ["give --target-latency"]),
])
def test_slim_takes_one_budget_before_any_training(work, extra, needles):
    refused_unchanged(work, ["slim", "--arch", "vgg11", "--data", work / "data", "--out", work / "run", *extra],
                      *needles, usage=True)


def test_slim_refuses_a_latency_backend_before_any_training(work):
    refused_unchanged(work, ["slim", "--arch", "vgg11", "--data", work / "data", "--out", work / "run",
                             "--target-latency", "2", "--backend", "trt"], "got backend 'trt'")


def test_prune_into_its_own_model_directory(work):
    refused_unchanged(work, ["prune", work / "vgg", "--percent", "0.5", "--out", work / "vgg"], "--out")


def test_prune_into_the_dataset_it_reads(work):
    refused_unchanged(work, ["prune", work / "vgg", "--percent", "0.5", "--data", work / "data",
                             "--out", work / "data" / "train"], "--out", "--data")


def test_finetune_onto_its_source(work):
    refused_unchanged(work, ["finetune", work / "vgg", "--data", work / "data", "--out", work / "vgg"], "--out")


def test_slim_from_a_directory_into_itself(work):
    refused_unchanged(work, ["slim", "--from", work / "vgg", "--data", work / "data", "--out", work / "vgg"],
                      "--out")


def test_slim_into_a_model_directory(work):
    """It wrote a whole run of stage folders beside the model's own model.json and metrics."""
    refused_unchanged(work, ["slim", "--arch", "vgg11", "--width", "0.0625", "--data", work / "data", "--out",
                             work / "vgg"], "holds another model (model.json); slim would replace it")


def test_train_while_another_writer_holds_the_directory(work):
    from compress.lock import output_lock

    with output_lock(work / "t", "compress train (the other one)", directory=True):
        before = snapshot(work)
        assert_refused(invoke(["train", "--arch", "vgg11", "--width", "0.0625", "--data", work / "data",
                               "--epochs", "1", "--out", work / "t"]), "being written by", "the other one")
        assert snapshot(work) == before


@pytest.mark.parametrize("edit,needle", [
    (lambda p: p["groups"][0]["kept"].append(p["groups"][0]["kept"][0]), "more than once"),
    (lambda p: p["groups"][0]["kept"].__setitem__(0, 1.5), "not an integer"),
    (lambda p: p["groups"][0]["kept"].__setitem__(0, "1"), "not an integer"),
    (lambda p: p["groups"][0].__setitem__("channels_before", 10 ** 9), "channels_before"),
    (lambda p: p.__setitem__("format", "compress.plan/9"), "not a compress pruning plan"),
])
def test_prune_refuses_a_plan_that_cannot_be_right(work, edit, needle):
    assert invoke(["prune", work / "vgg", "--percent", "0.5", "--out", work / "p1"]).exit_code == 0
    plan = json.loads((work / "p1" / "plan.json").read_text())
    edit(plan)
    (work / "bad.json").write_text(json.dumps(plan))
    refused_unchanged(work, ["prune", work / "vgg", "--plan", work / "bad.json", "--out", work / "p2"], needle)


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["widths"]["features.0"].__setitem__("out_channels", 10 ** 9), "out_channels"),
    (lambda m: m.__setitem__("classes", m["classes"][:3]), "classes"),
    (lambda m: m["normalization"].__setitem__("std", [0.0, 0.1, 0.1]), "normalization.std"),
])
def test_stages_refuse_a_model_json_that_cannot_be_right(work, edit, needle):
    meta = json.loads((work / "vgg" / "model.json").read_text())
    edit(meta)
    (work / "vgg" / "model.json").write_text(json.dumps(meta))
    refused_unchanged(work, ["prune", work / "vgg", "--percent", "0.5", "--out", work / "p"], needle)


def test_retraining_a_finished_directory_with_other_settings_names_them(work):
    args = ["train", "--arch", "vgg11", "--width", "0.0625", "--data", work / "data", "--epochs", "1",
            "--recipe", "fast", "--out", work / "t"]
    assert invoke(args).exit_code == 0
    line = refused_unchanged(work, [*args[:-2], "--sparsity", "1e-3", "--out", work / "t"], "other settings",
                             "sparsity")
    assert "epochs" not in line


def test_import_onto_its_own_weights_file(work):
    refused_unchanged(work, ["import", work / "vgg" / "model.safetensors", "--arch", "vgg11", "--arch-kwargs",
                             '{"width": 0.0625}', "--input-size", "32", "--classes", ",".join(CLASSES),
                             "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2", "--out", work / "vgg"], "--out")


def test_import_refuses_non_finite_normalization(work):
    refused_unchanged(work, ["import", work / "vgg" / "model.safetensors", "--arch", "vgg11", "--input-size", "32",
                             "--classes", ",".join(CLASSES), "--mean", f"0.5,{math.nan},0.5", "--std", "0.2,0.2,0.2",
                             "--out", work / "m"], "--mean")


def _complete_dirs_are_whole(root):
    """Every directory that looks finished (model.json) has the weights model.json names."""
    import hashlib

    for meta_path in root.rglob("model.json"):
        meta = json.loads(meta_path.read_text())
        weights = meta_path.parent / "model.safetensors"
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == meta["weights_sha256"], meta_path


@pytest.mark.slow
@pytest.mark.parametrize("module,attr,sig", [
    ("compress.training", "_save_state", "SIGKILL"),        # mid sparse training, after an epoch's state
    ("compress.stages._run", "save_model_dir", "SIGKILL"),  # a stage written, the next not started
    ("compress.slimming", "prune", "SIGINT"),             # channels removed in memory, nothing written
    ("compress.slimming", "prune", "SIGTERM"),
])
def test_slim_killed_at_a_point_resumes_to_the_same_result(work, module, attr, sig):
    from hostile_support import SIGNALS, pause_at, run_until_marker

    # --round-to 4: the quick preset's "auto" is 16 with AVX-512, whose floor keeps 71% of this VGG's MACs.
    args = ["slim", "--arch", "vgg11", "--width", "0.0625", "--data", work / "data", "--pretrain-epochs", "0",
            "--epochs", "2", "--finetune-epochs", "1", "--sparsity", "1e-4", "--batch-size", "8",
            "--round-to", "4", "--out", work / "run"]
    status, _ = run_until_marker(pause_at(module, attr, args), "PAUSED", SIGNALS[sig], cwd=work)
    assert status != 0
    assert not (work / "run" / "summary.json").exists()
    _complete_dirs_are_whole(work / "run")
    assert not list((work / "run").rglob(".lock")) or sig == "SIGKILL"
    finished = {p: p.stat().st_mtime_ns for p in (work / "run").rglob("model.json")}
    resumed = invoke(args)
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert set(summary["stages"]) == {"sparse", "pruned", "finetuned"}
    _complete_dirs_are_whole(work / "run")
    assert len((work / "run" / "sparse" / "metrics.jsonl").read_text().splitlines()) == 2
    # Resumed, not redone: stages finished before the kill are kept as they were.
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    if attr == "save_model_dir":
        assert finished, "the kill came after a stage was written"


@pytest.mark.parametrize("change,needle", [(["--lr", "0.05"], "recipe"), (["--seed", "3"], "seed"),
                                           (["--recipe", "paper"], "recipe")])
def test_retraining_with_another_lr_seed_or_recipe_is_refused(work, change, needle):
    args = ["train", "--arch", "vgg11", "--width", "0.0625", "--data", work / "data", "--epochs", "1",
            "--recipe", "fast", "--out", work / "t"]
    assert invoke(args).exit_code == 0
    changed = list(args)
    for option, value in zip(change[::2], change[1::2]):
        if option in changed:
            changed[changed.index(option) + 1] = value
        else:
            changed[-2:-2] = [option, value]
    refused_unchanged(work, changed, "other settings", needle)
