"""Pruning to a MACs or parameter budget: the threshold search, its cost model, and cost-aware importance."""

import copy

import pytest
import torch
from tests_support import randomize_bn

from compress import slimming
from compress.errors import CompressError
from compress.measure import count_params_macs, layer_widths
from compress.models import create_model

EXAMPLE = torch.zeros(1, 3, 32, 32)


@pytest.mark.slow
def test_half_the_macs_of_vgg19():
    model = randomize_bn(create_model("vgg19"), stats=False)
    _, macs0 = count_params_macs(model)
    pruned, plan = slimming.prune(model, None, EXAMPLE, target_macs=0.5)
    _, macs1 = count_params_macs(pruned)
    assert abs(macs1 / macs0 - 0.5) <= 0.03 * 0.5
    assert plan["budget"]["target"] == "macs" and plan["budget"]["asked"] == 0.5
    assert plan["budget"]["met"] == pytest.approx(macs1 / macs0)


@pytest.mark.parametrize("arch,kwargs", [("preresnet20", {"width": 0.5}), ("densenet10", {}),
                                         ("mobilenet_v2", {"width_mult": 0.5})])
@pytest.mark.parametrize("target", ["macs", "params"])
def test_estimated_cost_is_the_measured_cost(arch, kwargs, target):
    """Selections, depthwise groups and compensation biases: the search's estimate is what pruning gives
    (MACs exactly; parameters bounded from above, as compensation adds no bias where it has nothing to fold)."""
    model = randomize_bn(create_model(arch, **kwargs), stats=False)
    _, plan = slimming.prune(model, None, EXAMPLE, **{f"target_{target}": 0.6})
    b = plan["budget"]
    if target == "macs":
        assert b["met"] == pytest.approx(b["estimated"], abs=1e-12)
    assert b["estimated"] - 2e-3 <= b["met"] <= b["estimated"] + 1e-12
    assert 0.6 * 0.97 <= b["met"] <= 0.6


class SharedBlock(torch.nn.Module):
    """One block run at 32×32 and again at 4×4 (a shared head, a siamese branch)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                   nn.Conv2d(64, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        small = torch.nn.functional.avg_pool2d(x, 8)
        return self.fc(torch.cat([self.block(x).mean((2, 3)), self.block(small).mean((2, 3))], 1))


def test_a_layer_run_twice_costs_both_runs():
    """The cost model counted a layer at its last call only: asked 0.5, it delivered 0.404 and reported
    'met 10.74' (one counter divided by the other)."""
    from compress.measure import count_macs

    model = randomize_bn(SharedBlock(), seed=3)
    full = count_macs(model, (3, 32, 32))
    pruned, plan = slimming.prune(model, None, EXAMPLE, target_macs=0.8)
    b = plan["budget"]
    assert b["full"] == full
    assert b["met"] == pytest.approx(b["estimated"], abs=1e-12) == pytest.approx(count_macs(pruned, (3, 32, 32)) / full)
    assert b["met"] <= 0.8


def test_cost_aware_importance_meets_the_budget_with_fewer_channels():
    """Dividing γ by each channel's MACs share removes expensive channels first."""
    model = randomize_bn(create_model("vgg11", width=0.25), stats=False)
    _, plain = slimming.prune(copy.deepcopy(model), None, EXAMPLE, target_macs=0.5)
    _, aware = slimming.prune(copy.deepcopy(model), None, EXAMPLE, target_macs=0.5, cost_aware=True)
    assert aware["budget"]["importance"] != plain["budget"]["importance"]
    assert aware["budget"]["met"] <= 0.5 and plain["budget"]["met"] <= 0.5
    assert aware["pruned_fraction"] < plain["pruned_fraction"]


def test_budget_plan_replays():
    model = randomize_bn(create_model("preresnet20", width=0.5), stats=False)
    pruned, plan = slimming.prune(copy.deepcopy(model), None, EXAMPLE, target_params=0.5, min_keep=0.1)
    replayed, again = slimming.prune(model, None, EXAMPLE, plan=plan)
    assert layer_widths(replayed) == layer_widths(pruned)
    assert again["budget"]["asked"] == 0.5


def test_unreachable_budget_is_refused_with_the_reachable_minimum():
    with pytest.raises(CompressError, match="cannot be met.*at least"):
        slimming.prune(randomize_bn(create_model("vgg11", width=0.125), stats=False), None, EXAMPLE, target_macs=0.05,
                       min_keep=0.5)


@pytest.mark.parametrize("kwargs,message", [({"target_macs": 0.5, "target_params": 0.5}, "not both"),
                                            ({"cost_aware": True, "percent": 0.5}, "needs a budget"),
                                            ({"target_macs": 1.5}, r"fraction in \(0, 1\)")])
def test_bad_budget_arguments_are_refused(kwargs, message):
    kwargs = {"percent": None, **kwargs}
    with pytest.raises(CompressError, match=message):
        slimming.prune(create_model("vgg11", width=0.125), kwargs.pop("percent"), EXAMPLE, **kwargs)


def test_prune_command_takes_a_macs_target(tmp_path):
    import json

    from click.testing import CliRunner

    from compress.artifact import save_model_dir
    from compress.cli import main

    meta = {"arch": "vgg11", "arch_kwargs": {"num_classes": 10, "width": 0.125},
            "classes": [str(i) for i in range(10)], "input_size": [3, 32, 32],
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    saved = save_model_dir(randomize_bn(create_model("vgg11", width=0.125), stats=False), tmp_path / "m", meta)
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m"), "--target-macs", "0.6", "--cost-aware",
                                       "--out", str(tmp_path / "p")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    pruned = json.loads((tmp_path / "p" / "model.json").read_text())
    assert 0.6 * 0.97 <= pruned["macs"] / saved["macs"] <= 0.6
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert plan["budget"]["asked"] == 0.6 and "met" in result.output
    both = CliRunner().invoke(main, ["prune", str(tmp_path / "m"), "--percent", "0.5", "--target-macs", "0.6",
                                     "--out", str(tmp_path / "q")])
    assert both.exit_code != 0 and "one of" in both.output
