"""The public API: every name in compress.__all__ resolves, and plans replay what they recorded."""

import subprocess
import sys

import pytest
import torch

import compress
from compress.models import create_model


def test_every_public_name_resolves():
    for name in compress.__all__:
        assert getattr(compress, name) is not None, name
    with pytest.raises(AttributeError):
        compress.no_such_name  # noqa: B018


def test_importing_the_package_does_not_import_torch():
    code = "import sys, compress; assert 'torch' not in sys.modules, sorted(sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_a_subpackage_the_readme_names_resolves_after_a_plain_import():
    code = ("import compress; assert callable(compress.slimming.removal_preview); "
            "assert not hasattr(compress, 'no_such_module') and not hasattr(compress, '_private')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _randomized(seed: int):
    torch.manual_seed(seed)
    model = create_model("vgg11", width=0.125)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0, 1)
    return model.eval()


def test_a_plan_replays_its_own_channels_on_a_model_with_other_gammas(tmp_path):
    example = torch.zeros(1, 3, 32, 32)
    plan = compress.prune(_randomized(0), example, percent=0.5)
    plan.save(tmp_path / "plan.json")
    loaded = compress.Plan.load(tmp_path / "plan.json")
    other = _randomized(1)
    # The other instance's own γ ranking would keep different channels: replay must not re-rank.
    own = compress.prune(_randomized(1), example, percent=0.5).kept()
    assert own != plan.kept()
    loaded.apply(other, example)
    modules = dict(other.named_modules())
    widths = {root: getattr(modules[root], "out_channels", getattr(modules[root], "num_features", None))
              for root in plan.kept()}
    assert widths == {root: len(kept) for root, kept in plan.kept().items()}
    # A floor that keeps every channel is no way to read the widths: it is refused, not a silent no-op.
    with pytest.raises(compress.CompressError, match="keeps every channel of every layer: percent 0.01 would prune"):
        compress.prune(other, example, percent=0.01, min_keep=1.0)


def test_a_plan_made_from_a_dict_is_checked_when_made(tmp_path):
    """Plan({}) was accepted, and its first property raised a bare KeyError."""
    with pytest.raises(compress.CompressError, match=r"^plan is not a compress pruning plan \(format None\)$"):
        compress.Plan({})
    with pytest.raises(compress.CompressError, match="a plan is a JSON object, got list"):
        compress.Plan([])
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(compress.CompressError, match="list.json: a plan is a JSON object, got list"):
        compress.Plan.load(tmp_path / "list.json")
    plan = compress.prune(_randomized(0), torch.zeros(1, 3, 32, 32), percent=0.5)
    assert compress.Plan(plan.to_dict()).kept() == plan.kept()


def test_prune_refuses_what_it_cannot_use():
    with pytest.raises(compress.CompressError, match="percent"):
        compress.prune(_randomized(0), torch.zeros(1, 3, 32, 32))
    with pytest.raises(compress.CompressError, match="tensor batch"):
        compress.prune(_randomized(0), [1, 3, 32, 32], percent=0.5)


def test_save_model_needs_an_importable_class(tmp_path):
    class Local(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(compress.CompressError, match="importable module"):
        compress.save_model(Local(), tmp_path / "m", classes=["a", "b"], input_size=8, mean=[0.5] * 3,
                            std=[0.2] * 3)
    assert not (tmp_path / "m").exists()


def test_save_model_refuses_kwargs_that_do_not_rebuild_the_model(tmp_path):
    model = _randomized(0)
    with pytest.raises(compress.CompressError, match="does not rebuild|does not have|builds as a"):
        compress.save_model(model, tmp_path / "m", arch="vgg13", arch_kwargs={"width": 0.125, "num_classes": 10},
                            classes=list("abcdefghij"), input_size=32, mean=[0.5] * 3, std=[0.2] * 3)
    meta = compress.save_model(model, tmp_path / "ok", arch="vgg11", arch_kwargs={"width": 0.125, "num_classes": 10},
                               classes=list("abcdefghij"), input_size=32, mean=[0.5] * 3, std=[0.2] * 3)
    loaded, _ = compress.load_model(tmp_path / "ok")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert meta["arch"] == "vgg11"


def test_the_stages_export_and_the_request_are_public():
    for name in ("export", "finetune", "slim", "import_weights", "PruneRequest", "SlimOptions", "RunOptions",
                 "DataOptions"):
        assert name in compress.__all__, name
    assert compress.export.__module__ == "compress.stages.export"
    assert compress.slim.__module__ == "compress.stages.slim"
    assert compress.PruneRequest(percent=0.5).text() == "50% of channels"


def test_no_module_of_ours_shadows_a_public_name():
    """Importing `compress.X` binds the attribute X of the package to that module: a module named like a
    public function (compress.train, compress.bench, compress.quantize) would replace the function."""
    import importlib
    import inspect
    import pkgutil

    import compress

    for info in pkgutil.walk_packages(compress.__path__, "compress."):
        if not info.name.startswith(("compress.cli", "compress.runtime.trt", "compress.runtime.cuda",
                                     "compress.runtime.jetson", "compress.exporting.tensorrt")):
            importlib.import_module(info.name)
    shadowed = [name for name in compress.__all__ if inspect.ismodule(getattr(compress, name))]
    assert shadowed == []


def test_plausible_arguments_of_another_form_are_taken_or_named(tmp_path):
    """An int input_size for TargetedSparsity (save_model takes one), a measure returning a float, and a file
    where a model directory goes each escaped as a raw TypeError or FileExistsError."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4))
    request = compress.PruneRequest(percent=0.3)
    reg = compress.TargetedSparsity(prune=request).build(model, [0.1] * 4, input_size=16)
    assert reg.gammas
    with pytest.raises(compress.CompressError, match="measure must return a dict of finite p50_ms and cv"):
        compress.prune(model.eval(), torch.zeros(1, 3, 16, 16), target_latency_ms=1.0, measure=lambda m, x: 0.5)
    (tmp_path / "file").write_text("x")
    with pytest.raises(compress.CompressError, match="is a file; a model directory needs a folder"):
        compress.save_model(model, tmp_path / "file", classes=list("abcd"), input_size=16, mean=[0.5] * 3,
                            std=[0.25] * 3)
