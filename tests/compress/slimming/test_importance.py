"""Pluggable importance: |γ| by default, the cost-aware score as one more importance, a user callable and
a Torch-Pruning importance, each checked."""

import copy

import pytest
import torch
from tests_support import randomize_bn

from compress import slimming
from compress.errors import CompressError
from compress.models import create_model

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _model(seed=0):
    return randomize_bn(create_model("vgg11", width=0.25), seed=seed)


def _kept(plan):
    return {g["root"]: g["kept"] for g in plan["groups"]}


def test_a_user_callable_decides_and_sees_each_unit():
    seen = {}

    def smallest_gamma_is_best(unit):  # the opposite of slimming: keeps the channels |γ| would drop
        seen[unit.name] = (unit.kind, {layer.role for layer in unit.layers}, unit.gamma)
        assert unit.gamma.shape == (unit.channels,) and unit.model is not None
        return -unit.gamma

    _, plan = slimming.prune(_model(), 0.4, EXAMPLE, min_keep=0.0, importance=smallest_gamma_is_best)
    assert plan["importance"] == "smallest_gamma_is_best"
    assert set(seen) == {g["root"] for g in plan["groups"]}
    assert plan["channels_after"] < plan["channels_before"]
    for g in plan["groups"]:
        kind, roles, gamma = seen[g["root"]]
        assert kind == "group" and roles >= {"out", "bn"}
        removed = sorted(set(range(g["channels_before"])) - set(g["kept"]))
        if removed:  # what the callable ranked highest stays: the smallest |γ|
            assert float(gamma[g["kept"]].max()) <= float(gamma[removed].min())


def test_a_torch_pruning_importance_plugs_in():
    tp = pytest.importorskip("torch_pruning")
    _, plan = slimming.prune(_model(), 0.4, EXAMPLE, importance=tp.importance.MagnitudeImportance(p=1))
    _, default = slimming.prune(_model(), 0.4, EXAMPLE)
    assert plan["importance"] == "MagnitudeImportance"
    assert plan["channels_after"] < plan["channels_before"] and _kept(plan) != _kept(default)
    assert plan["check"]["max_relative_difference"] <= 1e-4


def test_the_cost_aware_score_is_an_importance_and_cost_aware_its_alias():
    _, by_name = slimming.prune(_model(), None, EXAMPLE, target_macs=0.5, importance="cost")
    _, by_flag = slimming.prune(_model(), None, EXAMPLE, target_macs=0.5, cost_aware=True)
    assert _kept(by_name) == _kept(by_flag)
    assert by_name["budget"]["importance"] == "|γ| / macs share"
    with pytest.raises(CompressError, match="cost_aware importance needs a budget"):
        slimming.prune(_model(), 0.5, EXAMPLE, importance="cost")


@pytest.mark.parametrize("importance,message", [
    ("magnitude", "importance must be 'gamma', 'cost', a callable or a Torch-Pruning importance"),
    (lambda unit: unit.gamma[:-1], r"importance for .* must be \d+ finite scores, got \d+"),
    (lambda unit: unit.gamma * float("nan"), r"\(not all finite\)"),
    (lambda unit: [1.0] * unit.channels, "importance returned list"),
])
def test_an_importance_that_gives_no_usable_score_is_refused(importance, message):
    model = _model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CompressError, match=message):
        slimming.prune(model, 0.4, EXAMPLE, importance=importance)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
