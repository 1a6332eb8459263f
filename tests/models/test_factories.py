"""Factories as architectures (issue 17 part 5): timm's create_model and ultralytics' task models named in a
model directory with JSON arguments, picked by save_model without a wrapper class, their arguments checked
(missing ones named, fetching ones refused), and our own keyword names never colliding with the user's."""

import json
import sys
import textwrap

import pytest
import torch

import compress
from compress.errors import CompressError
from compress.models import build_from_file, create_model

timm = pytest.importorskip("timm", reason="timm is an optional dependency (the dev extra installs it)")

KW = {"input_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3}
TEN = [str(i) for i in range(10)]


def lively(model, seed=0):
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand_like(m.weight) + 0.05
            m.bias.data = torch.randn_like(m.bias) * 0.1
    return model.eval()


def same_outputs(a, b, size=64):
    from compress.exporting.outputs import flatten_outputs

    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        fa, fb = flatten_outputs(a.eval()(x)), flatten_outputs(b.eval()(x))
    return [n for n, _ in fa] == [n for n, _ in fb] and all(torch.equal(p, q) for (_, p), (_, q) in zip(fa, fb))


# --- timm -------------------------------------------------------------------------------------------------

def test_a_timm_model_saves_and_loads_without_a_wrapper(tmp_path):
    model = lively(timm.create_model("resnet18", num_classes=10, drop_rate=0.2))
    meta = compress.save_model(model, tmp_path / "m", classes=TEN, **KW)
    assert meta["arch"] == "timm:create_model"
    assert meta["arch_kwargs"]["model_name"] == "resnet18" and meta["arch_kwargs"]["num_classes"] == 10
    loaded, _ = compress.load_model(tmp_path / "m")
    assert type(loaded).__module__ == "timm.models.resnet" and same_outputs(loaded, model)


@pytest.mark.slow
@pytest.mark.parametrize("name, attribute", [("resnet18", None), ("resnet50d", None), ("mixnet_s", "splits"),
                                             ("res2net50_14w_8s", "width"), ("cspresnet50", "expand_chs")])
def test_pruned_timm_models_load_back_exactly(tmp_path, name, attribute):
    """Split sizes kept in attributes (MixedConv2d.splits, Res2Net's width, CSP's expand_chs) travel too."""
    model = lively(timm.create_model(name, num_classes=10))
    plan = compress.prune(model, torch.zeros(1, 3, 64, 64), percent=0.3)
    assert plan.channels_after < plan.channels_before
    meta = compress.save_model(model, tmp_path / "m", classes=TEN, **KW)
    loaded, meta = compress.load_model(tmp_path / "m")
    assert meta["params"] == sum(p.numel() for p in model.parameters()) and same_outputs(loaded, model)
    recorded = {a for attrs in meta.get("attributes", {}).values() for a in attrs}
    assert recorded == ({attribute} if attribute else set())


def test_a_hand_written_factory_entry_builds(tmp_path):
    model = build_from_file("timm:create_model", {"model_name": "resnet18", "num_classes": 10})
    assert model.num_classes == 10 and type(model).__name__ == "ResNet"


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "needs the argument(s) model_name"),
    ({"model_name": "resnet18", "pretrained": True}, "argument pretrained would load"),
    ({"model_name": "resnet18", "checkpoint_path": "/tmp/x.pth"}, "argument checkpoint_path would load"),
    ({"model_name": "resnet18", "pretrained_cfg_overlay": {"file": "/tmp/x.pth"}}, "pretrained_cfg_overlay"),
    ({"model_name": "hf-hub:timm/resnet18.a1_in1k"}, "hub and local directory names are not loaded"),
    ({"model_name": "local-dir:/tmp"}, "hub and local directory names are not loaded"),
    ({"model_name": "resnet19"}, "timm has no model 'resnet19'"),
])
def test_timm_arguments_that_are_missing_or_fetch_are_refused(kwargs, needle):
    with pytest.raises(ValueError) as err:
        build_from_file("timm:create_model", kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_timm_model_save_cannot_describe_is_refused_in_one_line(tmp_path):
    model = timm.create_model("resnet18", num_classes=10, act_layer=torch.nn.SiLU)
    with pytest.raises(CompressError, match="act_layer.*not JSON"):
        compress.save_model(model, tmp_path / "m", classes=TEN, **KW)
    model.pretrained_cfg = {}  # what timm records when a model is built by its class rather than create_model
    with pytest.raises(CompressError, match="cannot tell how timm built"):
        compress.save_model(model, tmp_path / "m", classes=TEN, **KW)
    assert not (tmp_path / "m" / "model.json").exists()


def test_arguments_that_change_behaviour_but_no_shape_are_caught_on_save(tmp_path):
    model = lively(timm.create_model("resnet18", num_classes=10, act_layer="silu"))
    compress.save_model(model, tmp_path / "ok", classes=TEN, **KW)  # recorded by timm: rebuilt exactly
    with pytest.raises(CompressError, match="not its output"):
        compress.save_model(model, tmp_path / "m", classes=TEN, arch_kwargs={"act_layer": "relu"}, **KW)
    assert not (tmp_path / "m" / "model.json").exists()


# --- our keyword names never collide with the user's --------------------------------------------------------

COLLIDING = textwrap.dedent("""
    import torch.nn as nn

    class Named(nn.Module):
        def __init__(self, name, arch="x", num_classes=3):
            super().__init__()
            self.name, self.arch = name, arch
            self.fc = nn.Linear(3, num_classes)

        def forward(self, x):
            return self.fc(x.mean((2, 3)))

    class NeedsBlocks(nn.Module):
        def __init__(self, block, layers, width=1):
            super().__init__()
""")


@pytest.fixture()
def colliding(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "colliding.py").write_text(COLLIDING)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield
    sys.modules.pop("colliding", None)


def test_constructor_arguments_named_like_ours_reach_the_constructor(tmp_path, colliding):
    model = create_model("colliding:Named", name="net", arch="mine")
    assert (model.name, model.arch, model.fc.out_features) == ("net", "mine", 10)
    model = build_from_file("colliding:Named", {"name": "n", "arch": "a", "num_classes": 2}, trust="colliding")
    assert (model.name, model.arch, model.fc.out_features) == ("n", "a", 2)
    compress.save_model(model, tmp_path / "m", arch_kwargs={"name": "n", "arch": "a", "num_classes": 2},
                        classes=["a", "b"], **KW)
    loaded, meta = compress.load_model(tmp_path / "m", trust="colliding")
    assert meta["arch_kwargs"]["name"] == "n" and loaded.name == "n"


def test_missing_arguments_are_named(colliding):
    with pytest.raises(ValueError, match=r"colliding:NeedsBlocks needs the argument\(s\) block, layers"):
        create_model("colliding:NeedsBlocks")
    with pytest.raises(ValueError, match=r"colliding:Named needs the argument\(s\) name"):
        build_from_file("colliding:Named", {}, trust="colliding")


# --- ultralytics --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def yolo():
    tasks = pytest.importorskip("ultralytics.nn.tasks", reason="ultralytics is optional (AGPL; the dev extra has it)")
    return lively(tasks.DetectionModel("yolov8n.yaml", verbose=False))


def test_an_ultralytics_detector_saves_and_loads_without_a_wrapper(tmp_path, yolo):
    meta = compress.save_model(yolo, tmp_path / "m", input_size=128, mean=[0.0] * 3, std=[1.0] * 3)
    assert meta["arch"] == "ultralytics.nn.tasks:DetectionModel"
    assert meta["arch_kwargs"]["cfg"]["backbone"][0] == [-1, 1, "Conv", [64, 3, 2]]
    assert meta["classes"] == [str(i) for i in range(80)]
    loaded, _ = compress.load_model(tmp_path / "m")
    assert type(loaded).__name__ == "DetectionModel" and same_outputs(loaded, yolo, 128)


def test_an_ultralytics_cfg_by_name_builds_from_the_packaged_file_only(tmp_path, monkeypatch, yolo):
    # A cfg of the same name in the current directory is what ultralytics itself would read first.
    (tmp_path / "yolov8n.yaml").write_text("activation: __import__('pathlib').Path('MARKER').touch()\n")
    monkeypatch.chdir(tmp_path)
    model = build_from_file("ultralytics.nn.tasks:DetectionModel", {"cfg": "yolov8n.yaml", "nc": 80, "verbose": False})
    assert not (tmp_path / "MARKER").exists()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in yolo.parameters())


@pytest.mark.parametrize("change, needle", [
    (lambda c: c.update(activation="__import__('os').system('touch MARKER')"), "activation must be a torch.nn class"),
    (lambda c: c["backbone"].__setitem__(0, [-1, 1, "torch_load", ["evil.pt"]]), "not a layer class"),
    (lambda c: c["backbone"].__setitem__(0, [-1, 1, "DetectionModel", ["evil.yaml"]]), "not a layer class"),
    (lambda c: c["backbone"].__setitem__(0, [-1, 1, "TorchVision", [512, "resnet18", "DEFAULT"]]), "downloads"),
    (lambda c: c["backbone"].__setitem__(2, [-1, 10 ** 6, "C2f", [128, True]]), "repeats must be an integer"),
    (lambda c: c["backbone"].__setitem__(0, [5, 1, "Conv", [64, 3, 2]]), "not earlier layers"),
    (lambda c: c["scales"].__setitem__("n", [0.33, 1e6, 1024]), "width must be a number"),
    (lambda c: c.update(backbone=[], head=[]), "1..1024 layers"),
    # Forty arguments: with a sign both optional and in the number class, a failing match backtracked
    # through 2^40 ways (days); now the pattern is linear and the string bounded.
    (lambda c: c.update(activation="nn.ReLU(" + "-1," * 40 + "x)"), "activation must be a torch.nn class"),
])
def test_a_hostile_ultralytics_cfg_is_refused_before_ultralytics_sees_it(tmp_path, monkeypatch, yolo, change, needle):
    monkeypatch.chdir(tmp_path)
    cfg = json.loads(json.dumps(yolo.yaml))
    change(cfg)
    with pytest.raises(ValueError) as err:
        build_from_file("ultralytics.nn.tasks:DetectionModel", {"cfg": cfg})
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("cfg, needle", [("../yolov8n.yaml", "not the file name"), ("https://x/y.yaml", "not the file"),
                                         ("yolov99z.yaml", "ships no model cfg"), (None, "needs the argument cfg"),
                                         ("1n-" * 20000 + ".x.yaml", "ships no model cfg")])  # quadratic before
def test_ultralytics_cfg_names_outside_the_package_are_refused(yolo, cfg, needle):
    kwargs = {} if cfg is None else {"cfg": cfg}
    with pytest.raises(ValueError, match=needle):
        build_from_file("ultralytics.nn.tasks:DetectionModel", kwargs)


def test_rebuilding_an_ultralytics_model_logs_nothing_at_info():
    """ClassificationModel logs its summary at INFO whatever `verbose` says, to the stdout ultralytics found at
    import: `compress share --json` printed it before its JSON. The logger's level comes back after."""
    import logging

    tasks = pytest.importorskip("ultralytics.nn.tasks", reason="ultralytics is optional (AGPL; the dev extra has it)")
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("ultralytics")
    logger.addHandler(handler)
    level = logger.level
    try:
        build_from_file("ultralytics.nn.tasks:ClassificationModel", {"cfg": "yolov8n-cls.yaml", "nc": 3, "verbose": False})
        assert [r.getMessage() for r in records if r.levelno < logging.WARNING] == []
        assert logger.level == level
        tasks.ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False)  # what it logs when built directly
        assert any("summary" in r.getMessage() for r in records)
    finally:
        logger.removeHandler(handler)
