"""PruneRequest: one target at most, checked once; put into words once; compared with plan.json on resume."""

import math

import pytest
import torch

from compress.errors import CompressError
from compress.request import TARGETS, PruneRequest, RequestConflict, slimming_keywords

CLI = {"percent": "--percent", "target_macs": "--target-macs", "target_params": "--target-params",
       "target_latency_ms": "--target-latency", "backend": "--backend", "importance='cost'": "--cost-aware"}
VALUES = {"percent": 0.5, "target_macs": 0.5, "target_params": 0.4, "target_latency_ms": 2.0}


@pytest.mark.parametrize("first,second", [(a, b) for i, a in enumerate(TARGETS) for b in TARGETS[i + 1:]])
def test_two_targets_are_one_conflict_naming_both(first, second):
    with pytest.raises(RequestConflict) as info:
        PruneRequest(**{first: VALUES[first], second: VALUES[second]})
    assert str(info.value) == (f"give one of percent, target_macs, target_params or target_latency_ms, "
                               f"not {first} and {second}")
    assert info.value.spelled(CLI) == (f"give one of --percent, --target-macs, --target-params or --target-latency, "
                                       f"not {CLI[first]} and {CLI[second]}")


def test_a_target_is_needed_to_decide_but_not_to_replay():
    floor_only = PruneRequest(min_keep=0.3, compensate=False)  # what a plan replay takes
    assert floor_only.target is None
    with pytest.raises(RequestConflict, match="give one of percent, target_macs, target_params or target_latency_ms$"):
        floor_only.require_target()
    assert PruneRequest(target_params=0.4).require_target() == "target_params"


def test_a_backend_needs_a_latency_target_and_cost_needs_a_budget():
    with pytest.raises(RequestConflict) as info:
        PruneRequest(percent=0.5, backend="openvino")
    assert info.value.spelled(CLI) == "--backend says what --target-latency is measured with; give --target-latency"
    with pytest.raises(RequestConflict) as info:
        PruneRequest(percent=0.5, importance="cost")
    assert str(info.value) == "importance='cost' needs a budget: target_macs, target_params or target_latency_ms"
    assert info.value.spelled(CLI).startswith("--cost-aware needs a budget: --target-macs")
    assert PruneRequest(target_latency_ms=2.0, backend="openvino", importance="cost").latency_backend == "openvino"
    assert PruneRequest(target_latency_ms=2.0).latency_backend == "ort-cpu"


@pytest.mark.parametrize("kwargs,message", [
    ({"percent": 1.5}, r"percent must be in \(0, 1\), got 1.5"),
    ({"percent": math.nan}, "percent must be in"),
    ({"percent": True}, "percent must be in"),
    ({"target_macs": 0.0}, r"target_macs must be a fraction in \(0, 1\)"),
    ({"target_params": 1.0}, "target_params must be a fraction"),
    ({"target_latency_ms": -1.0}, "target latency must be a positive number of milliseconds"),
    ({"target_latency_ms": math.inf}, "positive number of milliseconds"),
    ({"percent": 0.5, "min_keep": 1.5}, r"min_keep must be in \[0, 1\]"),
    ({"percent": 0.5, "min_channels": 0}, "min_channels must be >= 1"),
    ({"percent": 0.5, "round_to": "8"}, "round_to must be a whole number >= 1 or 'auto'"),
    ({"percent": 0.5, "round_to": 2.0}, "round_to must be a whole number"),
    ({"percent": 0.5, "round_to": 0}, "round_to must be >= 1"),
    ({"percent": 0.5, "compensate": "yes"}, "compensate must be True or False"),
    ({"target_macs": 0.5, "importance": "taylor"}, "importance must be one of gamma, cost or a callable"),
])
def test_impossible_values_are_refused_when_the_request_is_made(kwargs, message):
    with pytest.raises(CompressError, match=message):
        PruneRequest(**kwargs)


def test_the_request_in_words():
    assert PruneRequest(percent=0.5).text() == "50% of channels"
    assert PruneRequest(target_macs=0.25).text() == "target macs 0.25"
    assert PruneRequest(target_params=0.4).text() == "target params 0.4"
    assert PruneRequest(target_latency_ms=2.5, backend="openvino").text() == "p50 latency 2.5 ms on openvino"


def test_a_plan_written_before_matches_the_request_that_made_it():
    """plan.json files as the slimming code wrote them before the request existed."""
    percent_plan = {"format": "compress.plan/1", "percent": 0.5, "threshold": 0.01, "min_keep": 0.2, "round_to": 1}
    macs_plan = {"percent": None, "min_keep": 0.2, "round_to": 16,
                 "budget": {"target": "macs", "asked": 0.5, "full": 1000, "estimated": 0.49, "met": 0.49,
                            "importance": "|γ|"}}
    latency_plan = {"percent": None, "min_keep": 0.2, "round_to": 1,
                    "budget": {"target": "latency_ms", "asked": 2.0, "backend": "ort-cpu", "batch": 1, "met": 1.9}}
    assert PruneRequest(percent=0.5).matches(percent_plan)
    assert not PruneRequest(percent=0.6).matches(percent_plan)
    assert not PruneRequest(percent=0.5, min_keep=0.3).matches(percent_plan)
    assert not PruneRequest(target_macs=0.5).matches(percent_plan)
    assert PruneRequest(target_macs=0.5, round_to=16).matches(macs_plan)
    assert not PruneRequest(target_macs=0.5).matches(macs_plan)  # another round_to
    assert not PruneRequest(target_params=0.5, round_to=16).matches(macs_plan)
    assert not PruneRequest(percent=0.5, round_to=16).matches(macs_plan)
    assert PruneRequest(target_latency_ms=2.0).matches(latency_plan)
    assert not PruneRequest(target_latency_ms=2.0, backend="openvino").matches(latency_plan)
    assert PruneRequest(target_macs=0.5).recorded() == {"target": "macs", "asked": 0.5}
    assert PruneRequest(percent=0.5).recorded() is None


def test_keywords_are_checked_by_name_and_replace_a_given_requests_fields():
    base = PruneRequest(percent=0.5, min_keep=0.3)
    assert PruneRequest.from_keywords(base, round_to=8) == PruneRequest(percent=0.5, min_keep=0.3, round_to=8)
    assert PruneRequest.from_keywords(base) is base
    with pytest.raises(CompressError, match=r"unknown pruning option cost_aware; cost_aware=True is importance='cost'"):
        PruneRequest.from_keywords(percent=0.5, cost_aware=True)
    with pytest.raises(CompressError, match="unknown pruning options percnt, treshold"):
        PruneRequest.from_keywords(percnt=0.5, treshold=0.1)
    with pytest.raises(CompressError, match="request must be a PruneRequest, got dict"):
        PruneRequest.from_keywords({"percent": 0.5}, round_to=8)


def test_the_importance_reaches_the_pruning_code_through_one_function():
    floor = {"min_keep": 0.3, "min_channels": 2, "round_to": 8, "compensate": False}
    assert slimming_keywords(PruneRequest(target_macs=0.5, importance="cost", **floor)) == {
        **floor, "importance": "cost", "shared": "select"}
    assert slimming_keywords(PruneRequest(percent=0.5, shared="narrow", **floor)) == {
        **floor, "importance": "gamma", "shared": "narrow"}


def test_a_plan_made_with_another_shared_mode_does_not_match_on_resume():
    plan = {"min_keep": 0.2, "round_to": 1, "budget": {"target": "macs", "asked": 0.5}}
    assert PruneRequest(target_macs=0.5).matches(plan)  # plans before the mode existed selected
    assert not PruneRequest(target_macs=0.5, shared="narrow").matches(plan)
    assert PruneRequest(target_macs=0.5, shared="narrow").matches({**plan, "shared": "narrow"})


def _vgg():
    from compress.models import create_model

    torch.manual_seed(0)
    model = create_model("vgg11", width=0.125)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0, 1)
    return model.eval()


def test_the_public_prune_takes_a_request_or_its_keywords_and_refuses_unknown_ones():
    import compress

    example = torch.zeros(1, 3, 32, 32)
    by_keywords = compress.prune(_vgg(), example, target_macs=0.5, importance="cost")
    by_request = compress.prune(_vgg(), example, compress.PruneRequest(target_macs=0.5, importance="cost"))
    assert by_keywords.kept() == by_request.kept()
    assert by_keywords.to_dict()["budget"]["importance"] == "|γ| / macs share"
    with pytest.raises(CompressError, match="unknown pruning option percentage"):
        compress.prune(_vgg(), example, percentage=0.5)
    plain = compress.prune(_vgg(), example, percent=0.5)
    by_gamma = compress.prune(_vgg(), example, percent=0.5, importance=lambda unit: unit.gamma)
    assert by_gamma.kept() == plain.kept()  # a callable that gives |γ| decides as |γ| does
    reversed_ = compress.prune(_vgg(), example, percent=0.5, importance=lambda unit: -unit.gamma)
    assert reversed_.kept() != plain.kept()
    with pytest.raises(CompressError, match="measure and log time a latency target"):
        compress.prune(_vgg(), example, percent=0.5, measure=lambda model, x: {"p50_ms": 1.0, "cv": 0.0})


def test_a_bug_inside_pruning_is_not_reported_as_an_unsupported_option(monkeypatch):
    """A TypeError raised by the pruning code is a bug to see, not a user's mistake to word."""
    import compress
    import compress.slimming

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(compress.slimming, "prune", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        compress.prune(_vgg(), torch.zeros(1, 3, 32, 32), percent=0.5)


def test_a_plan_matches_only_the_request_that_made_it():
    """Slim kept a pruned stage made without compensation, with another floor or importance, for a
    request that asked otherwise (the plan records all three)."""
    plan = {"percent": 0.5, "min_keep": 0.2, "round_to": 1, "shared": "select", "min_channels": 1,
            "compensated": True, "importance": "|γ|"}
    assert PruneRequest(percent=0.5).matches(plan)
    assert not PruneRequest(percent=0.5, compensate=False).matches(plan)
    assert not PruneRequest(percent=0.5, min_channels=8).matches(plan)
    budget = {**plan, "percent": None, "budget": {"target": "macs", "asked": 0.5}}
    assert PruneRequest(target_macs=0.5).matches(budget)
    assert not PruneRequest(target_macs=0.5, importance="cost").matches(budget)
    assert PruneRequest(percent=0.5).matches({k: v for k, v in plan.items()
                                              if k not in ("min_channels", "compensated", "importance")})


def test_a_target_given_as_a_keyword_replaces_the_requests_target():
    """The docstring says keywords replace the request's fields; target_macs on a percent request was
    refused as "two targets"."""
    import compress

    request = compress.PruneRequest(percent=0.5, min_keep=0.3)
    merged = PruneRequest.from_keywords(request, target_macs=0.4)
    assert (merged.percent, merged.target_macs, merged.min_keep) == (None, 0.4, 0.3)
    assert PruneRequest.from_keywords(request, min_keep=0.1).percent == 0.5
