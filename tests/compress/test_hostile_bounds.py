"""Bounds before work (issue 18): every list, depth, count, thread number, batch and image/tensor size read
from a file or an option is bounded before anything is allocated or run, and the bound is named in the
error. On broken code these cases run for hours or ask for petabytes, so each one runs under a deadline
(and, where memory is at stake, an address-space cap): running long is the failure.

The bounds live in compress/limits.py (models/ and runtime/ keep their own copies, as they import no
compress code).
"""

import copy

import pytest
from hostile_support import (
    deadline,
    fresh_copy,
    memory_cap,
    refused_unchanged,
    workspace,
)


@pytest.fixture
def work(tmp_path, tmp_path_factory):
    import compress.artifact  # noqa: F401 - torch and the loaders, imported before any deadline starts

    return fresh_copy(workspace(tmp_path_factory), tmp_path / "w")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


PLAN = {"format": "compress.plan/2", "percent": 0.5, "threshold": 0.1,
        "groups": [{"root": "features.0", "bn_layers": ["features.1"], "channels_before": 4, "kept": [0, 1]}]}


def plan_with(**group):
    plan = copy.deepcopy(PLAN)
    plan["groups"][0].update(group)
    return plan


# --- plans --------------------------------------------------------------------------------------------

def test_a_plan_with_9_6_million_indices_is_refused_at_once():
    """The case from the issue: still running after 300 s. The kept list is longer than its layer. (`prune
    --plan` reaches this check through compress.slimming; test_hostile_stages covers that wiring.)"""
    from compress.validate import InvalidFileError, validate_plan

    plan = plan_with(kept=[0] * 9_600_000)
    with deadline(5), pytest.raises(InvalidFileError, match="lists 9,600,000 channels of a layer that has 4"):
        validate_plan(plan, "plan.json")


def test_a_plan_with_more_groups_than_max_layers():
    from compress.limits import MAX_LAYERS, TooLargeError
    from compress.validate import validate_plan

    plan = copy.deepcopy(PLAN)
    plan["groups"] = [{**PLAN["groups"][0], "root": f"l{i}"} for i in range(MAX_LAYERS + 1)]
    with deadline(5), pytest.raises(TooLargeError, match="MAX_LAYERS"):
        validate_plan(plan)


def test_a_plan_whose_channels_add_up_past_the_bound():
    from compress.limits import TooLargeError
    from compress.validate import validate_plan

    plan = copy.deepcopy(PLAN)
    plan["groups"] = [{**PLAN["groups"][0], "root": f"l{i}", "channels_before": 1 << 20} for i in range(5)]
    with deadline(5), pytest.raises(TooLargeError, match="MAX_PLAN_CHANNELS"):
        validate_plan(plan)


def test_a_plan_is_checked_against_the_models_channels():
    """validate_plan(channels=...): the model's own channel counts bound the lists, for callers that pass them."""
    from compress.validate import InvalidFileError, validate_plan

    with pytest.raises(InvalidFileError, match="channels_before 4, the model's layer has 8"):
        validate_plan(copy.deepcopy(PLAN), channels={"features.0": 8})
    with pytest.raises(InvalidFileError, match="names no BatchNorm layer"):
        validate_plan(copy.deepcopy(PLAN), channels={"features.4": 8})
    assert validate_plan(copy.deepcopy(PLAN), channels={"features.0": 4}) == PLAN


def test_a_plan_rounding_to_more_channels_than_any_layer_has():
    from compress.limits import TooLargeError
    from compress.validate import validate_plan

    with pytest.raises(TooLargeError, match="round_to.*MAX_WIDTH"):
        validate_plan({**copy.deepcopy(PLAN), "round_to": 10 ** 9})


def test_model_json_with_more_layers_than_max_layers(work):
    import json

    from compress.limits import MAX_LAYERS

    meta = json.loads((work / "vgg" / "model.json").read_text())
    extra = {f"x{i}": {"type": "BatchNorm2d", "num_features": 1} for i in range(MAX_LAYERS + 1)}
    meta["widths"] = {**extra, **meta["widths"]}
    (work / "vgg" / "model.json").write_text(json.dumps(meta))
    with deadline(30):
        refused_unchanged(work, ["info", work / "vgg"], "model.json", "MAX_LAYERS")


# --- depths of registry names -------------------------------------------------------------------------


@pytest.fixture
def warm():
    """What `info` and `train` import, imported before the short deadline starts: only the case is timed."""
    import compress.cli.info  # noqa: F401
    import compress.cli.train  # noqa: F401
    import compress.info  # noqa: F401
    import compress.measure  # noqa: F401
    import compress.stages.train  # noqa: F401


@pytest.mark.parametrize("name,depth", [("preresnet900002", "900002"), ("densenet3000004", "3000004")])
def test_info_on_an_absurd_depth(work, warm, name, depth):
    with memory_cap(), deadline(3):
        refused_unchanged(work, ["info", name], depth, "depth", "bound")


def test_train_on_an_absurd_depth_is_refused_before_the_data_is_read(work, warm):
    with memory_cap(), deadline(3):
        refused_unchanged(work, ["train", "--arch", "preresnet900002", "--data", work / "data", "--out", work / "t",
                                 "--epochs", "1"], "900002", "depth", "bound")


def test_create_model_on_an_absurd_depth():
    from compress.models import create_model

    with memory_cap(), deadline(3), pytest.raises(ValueError, match="depth"):
        create_model("densenet3000004")


# --- batches, images and threads asked for by options -----------------------------------------------

@pytest.mark.parametrize("batching", ["--static-batch", "--dynamic-batch"])
def test_export_with_a_batch_of_2_to_the_40(work, batching):
    with memory_cap(), deadline(20):
        refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "b.onnx", batching, "--batch",
                                 str(2 ** 40)], "--batch")


def test_export_with_a_parity_limit_of_a_billion(work):
    with memory_cap(), deadline(20):
        refused_unchanged(work, ["export", work / "vgg", "--onnx", work / "b.onnx", "--parity-limit",
                                 str(10 ** 9)], "--parity-limit")


@pytest.mark.parametrize("field,value,needle", [("threads", 10 ** 6, "thread"), ("batches", (2 ** 40,), "batch"),
                                                ("streams", 10 ** 6, "stream")])
def test_bench_settings_bound_threads_batches_and_streams(field, value, needle):
    from compress.runtime.bench import BenchSettings

    with pytest.raises(ValueError, match=needle):
        BenchSettings(**{field: value})


def test_bench_with_a_batch_of_2_to_the_40(work):
    with memory_cap(), deadline(20):
        refused_unchanged(work, ["bench", work / "vgg.onnx", "--batch", str(2 ** 40), "--iters", "2",
                                 "--warmup", "0"], "--batch")


def test_bench_with_a_million_threads_starts_no_session(work, monkeypatch):
    """On broken code ONNX Runtime starts threads until the machine gives up: no session may be created."""
    import onnxruntime

    def no_session(*_a, **_k):
        raise AssertionError("a session was created for --threads 1000000")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    refused_unchanged(work, ["bench", work / "vgg.onnx", "--threads", str(10 ** 6), "--batch", "1", "--iters", "2",
                             "--warmup", "0"], "--threads")


@pytest.mark.parametrize("command", ["train", "import", "slim"])
def test_arch_kwargs_nested_100k_deep(work, command):
    deep = "[" * 100_000 + "]" * 100_000
    args = {"train": ["train", "--arch", "vgg11", "--data", work / "data", "--out", work / "t"],
            "import": ["import", work / "vgg" / "model.safetensors", "--arch", "vgg11", "--data", work / "data",
                       "--out", work / "i"],
            "slim": ["slim", "--arch", "vgg11", "--data", work / "data", "--out", work / "s"]}[command]
    refused_unchanged(work, [*args, "--arch-kwargs", deep], "--arch-kwargs", "deep")


def test_seeds_past_every_generator_are_refused_by_the_data_loader(work):
    from compress import CompressError, load_dataset

    with pytest.raises(CompressError, match="MAX_SEED"):
        load_dataset(str(work / "data"), "train", limit=4, seed=2 ** 70)


def test_the_bounds_are_named_in_one_place():
    import compress.limits as limits

    named = {n for n in dir(limits) if n.startswith("MAX_")}
    assert {"MAX_WIDTH", "MAX_LAYERS", "MAX_PLAN_CHANNELS", "MAX_BATCH", "MAX_THREADS", "MAX_SEED", "MAX_JSON_BYTES",
            "MAX_JSON_DEPTH", "MAX_IMAGE_PIXELS", "MAX_IMAGE_SIDE", "MAX_CLASSES"} <= named
    import compress.validate as validate

    assert validate.MAX_WIDTH is limits.MAX_WIDTH  # validate re-uses them rather than keeping copies


# --- what a model description builds ------------------------------------------------------------------

def test_an_oversized_architecture_is_refused_before_any_layer_is_built(work, warm, monkeypatch):
    """A DenseNet-40 of growth rate 1024 (within every field's bound) has 28 GiB of weights: refused from its
    shapes on the meta device. Counting while building refused only once the layers before the limit were
    initialized (9 GB resident first, a helper's probe on 2026-12-07), which the cap here turns into a
    MemoryError."""
    import json

    import compress.limits

    monkeypatch.setattr(compress.limits, "available_memory", lambda: 4 * 2**30)
    meta = json.loads((work / "vgg" / "model.json").read_text())
    meta.update(arch="densenet40", arch_kwargs={"num_classes": 10, "growth_rate": 1024}, widths={})
    (work / "vgg" / "model.json").write_text(json.dumps(meta))
    with memory_cap(), deadline(60):
        refused_unchanged(work, ["info", work / "vgg"], "densenet40", "GiB", "beyond", "memory available")


def test_decompress_bounds_the_rebuild_checks_forward(work, warm):
    """The rebuild check's probe forward runs at the file's input size: 16384² px (within the side bound)
    asked 48 GiB of a tiny VGG before the bound; refused from the layer shapes first."""
    from hostile_support import invoke

    from compress.sharing.container import decode_container, encode_container

    assert invoke(["share", work / "vgg", "--out", work / "shared", "--bits", "4"]).exit_code == 0
    meta, shared, raw = decode_container((work / "shared" / "model.dcz").read_bytes())
    meta["input_size"] = [3, 16384, 16384]
    (work / "wide.dcz").write_bytes(encode_container(meta, shared, raw)[0])
    with memory_cap(), deadline(60):
        refused_unchanged(work, ["share", "--decompress", work / "wide.dcz", "--out", work / "r"],
                          "a forward of 2 3x16384x16384 images", "memory available")
