"""Pruning to a latency budget (compress.latency_budget): the search over MACs fractions, what the plan
records, and the ways it refuses. The search is tested with deterministic timers injected in place of the
harness, so no test depends on this machine's speed; one test runs the real harness and checks only what
the plan records."""

import copy
import json

import pytest
import torch
from tests_support import lively

import compress
from compress import latency_budget
from compress.errors import CompressError
from compress.measure import count_params_macs, layer_widths
from compress.models import create_model
from compress.request import PruneRequest

EXAMPLE = torch.zeros(1, 3, 32, 32)


def tiny_vgg():
    return lively(create_model("vgg11", width=0.125))


def macs_of(model) -> int:
    return count_params_macs(model, (3, 32, 32))[1]


class MacsTimer:
    """A fake latency that grows with the MACs: `ms(fraction of the unpruned MACs)`; counts its calls."""

    def __init__(self, full_macs: int, ms=lambda f: 1.0 + 9.0 * f):
        self.full, self.ms, self.calls = full_macs, ms, 0

    def __call__(self, model, example):
        self.calls += 1
        return {"p50_ms": self.ms(macs_of(model) / self.full), "cv": 0.01}


def search(model, target_ms, timer, steps=6, **options):
    prune_options = dict(min_keep=0.2, min_channels=1, round_to=1, compensate=True, cost_aware=False, **options)
    return latency_budget.search_fraction(model, EXAMPLE, target_ms, prune_options=prune_options, measure=timer,
                                          steps=steps, backend="fake")


def test_the_search_keeps_the_largest_feasible_fraction_and_every_candidate():
    model = tiny_vgg()
    timer = MacsTimer(macs_of(model))
    best, full, tried = search(model, 5.5, timer)  # feasible exactly up to half the MACs
    assert full.macs_fraction == 1.0 and full.p50_ms == pytest.approx(10.0)
    assert tried[0] is full and len(tried) == 2 + 6  # unpruned, floor, six bisection steps
    feasible = [c for c in tried if c.p50_ms <= 5.5]
    assert best is max(feasible, key=lambda c: c.macs_fraction)
    assert best.macs_met <= 0.5
    # Bisection closes in: the best is within the last step's width of the infeasible neighbour above it.
    above = min(c.macs_fraction for c in tried if c.p50_ms > 5.5)
    assert above - best.macs_fraction <= (1.0 - tried[1].macs_fraction) / 2 ** 6 + 1e-12


def test_a_latency_that_is_not_monotone_in_the_macs_still_gives_the_largest_feasible_candidate():
    """Latency dips at some widths (kernel choice): the last step tried need not be the choice."""
    model = tiny_vgg()
    dip = lambda f: 1.0 if 0.45 <= f <= 0.55 else 1.0 + 9.0 * f  # noqa: E731
    best, _, tried = search(model, 3.0, MacsTimer(macs_of(model), dip))
    feasible = [c for c in tried if c.p50_ms <= 3.0]
    assert best.macs_fraction == max(c.macs_fraction for c in feasible)
    assert best.macs_met > 0.3  # the dip, above where the monotone part of the curve stops being feasible


def test_a_structure_timed_once_is_not_timed_again():
    model = tiny_vgg()
    timer = MacsTimer(macs_of(model))
    _, _, tried = search(model, 5.5, timer, steps=16)  # converging steps repeat structures
    structures = {c.macs_met for c in tried}
    # One more call: the choice is timed again, on purpose.
    assert timer.calls == len(structures) + 1 < len(tried) + 1


class SlowerSecondTime(MacsTimer):
    """Times every structure once as MacsTimer does, but the ones above `cut` run slower when timed again."""

    def __init__(self, full_macs, cut, factor=1.5):
        super().__init__(full_macs)
        self.cut, self.factor, self.seen = cut, factor, set()

    def __call__(self, model, example):
        f = macs_of(model) / self.full
        again = f in self.seen
        self.seen.add(f)
        self.calls += 1
        return {"p50_ms": self.ms(f) * (self.factor if again and f > self.cut else 1.0), "cv": 0.01}


def test_a_choice_that_misses_when_timed_again_gives_way_to_the_next_smaller_one():
    model = tiny_vgg()
    timer = SlowerSecondTime(macs_of(model), cut=0.45)
    best, _, tried = search(model, 5.5, timer)
    feasible = sorted({c.macs_fraction for c in tried if c.macs_fraction < 1.0 and c.p50_ms <= 5.5}, reverse=True)
    assert best.macs_met <= 0.45 and best.macs_fraction < feasible[0]
    assert best.confirmed_p50_ms <= 5.5
    rejected = [c for c in tried if c.confirmed_p50_ms is not None and c.confirmed_p50_ms > 5.5]
    assert rejected and all(c.macs_fraction > best.macs_fraction for c in rejected)


def test_no_choice_holding_on_re_timing_is_a_one_line_error():
    model = tiny_vgg()
    timer = SlowerSecondTime(macs_of(model), cut=0.0, factor=100.0)
    with pytest.raises(CompressError, match="no structure held it when timed again"):
        search(model, 5.5, timer)


def test_prune_to_latency_records_the_budget_in_the_plan_and_replays():
    model = tiny_vgg()
    fresh = copy.deepcopy(model)
    timer = MacsTimer(macs_of(model))
    pruned, plan = latency_budget.prune_to_latency(model, EXAMPLE, PruneRequest(target_latency_ms=5.5, iters=20),
                                                   measure=timer)
    b = plan["budget"]
    assert b["target"] == "latency_ms" and b["asked"] == 5.5 and b["met"] <= 5.5 and b["full"] == pytest.approx(10.0)
    assert (b["backend"], b["batch"], b["iterations"], b["opset"]) == ("ort-cpu", 1, 20, 17)
    assert b["macs_met"] == pytest.approx(macs_of(pruned) / timer.full)
    assert b["macs_fraction"] == max(c["macs_fraction"] for c in b["candidates"] if c["p50_ms"] <= 5.5)
    assert {"macs_fraction", "macs_met", "p50_ms", "cv"} <= set(b["candidates"][0])
    assert b["machine"]["cpu_count"] >= 1 and "threads" in b["machine"]
    assert plan["percent"] is None
    json.dumps(plan)  # plan.json must hold it
    replayed = compress.Plan(plan).apply(fresh, EXAMPLE)
    assert layer_widths(replayed) == layer_widths(pruned)


def test_an_impossible_target_is_refused_in_one_line_naming_the_best_latency():
    model = tiny_vgg()
    widths = layer_widths(model)
    with pytest.raises(CompressError, match=r"cannot be met.*best reached is p50 1\.\d+ ms") as info:
        latency_budget.prune_to_latency(model, EXAMPLE, PruneRequest(target_latency_ms=0.5),
                                        measure=MacsTimer(macs_of(model)))
    assert "\n" not in str(info.value)
    assert layer_widths(model) == widths  # candidates are pruned on copies


def test_a_target_the_unpruned_model_meets_is_refused_as_nothing_to_prune():
    model = tiny_vgg()
    widths = layer_widths(model)
    with pytest.raises(CompressError, match=r"already runs at p50 10\.000 ms.*nothing to prune"):
        latency_budget.prune_to_latency(model, EXAMPLE, PruneRequest(target_latency_ms=20.0),
                                        measure=MacsTimer(macs_of(model)))
    assert layer_widths(model) == widths


@pytest.mark.parametrize("kwargs,message", [
    ({"target_ms": 0.0}, "positive number of milliseconds"),
    ({"target_ms": float("nan")}, "positive number of milliseconds"),
    ({"backend": "trt"}, "measured on ort-cpu, openvino"),
    ({"backend": "ort-cuda"}, "got backend 'ort-cuda'"),
    ({"batch": 0}, "batch must be an integer >= 1"),
    ({"iters": 1}, "iters must be an integer >= 2"),
    ({"round_to": 0}, "round_to must be >= 1"),
])
def test_bad_latency_arguments_are_refused_before_any_timing(kwargs, message):
    model = tiny_vgg()
    timer = MacsTimer(macs_of(model))
    target = kwargs.pop("target_ms", 5.0)
    with pytest.raises(CompressError, match=message):
        latency_budget.prune_to_latency(model, EXAMPLE, PruneRequest(target_latency_ms=target, **kwargs),
                                        measure=timer)
    assert timer.calls == 0


def test_the_public_prune_takes_a_latency_target_and_refuses_a_second_budget():
    model = tiny_vgg()
    plan = compress.prune(model, EXAMPLE, target_latency_ms=5.5, measure=MacsTimer(macs_of(model)))
    assert plan.to_dict()["budget"]["target"] == "latency_ms"
    for extra in ({"percent": 0.5}, {"target_macs": 0.5}):
        with pytest.raises(CompressError, match="give one of"):
            compress.prune(tiny_vgg(), EXAMPLE, target_latency_ms=5.5, **extra)


def test_the_summary_shows_the_latency_asked_and_met():
    from compress.stages.summary import summary_markdown

    model = tiny_vgg()
    _, plan = latency_budget.prune_to_latency(model, EXAMPLE, PruneRequest(target_latency_ms=5.5),
                                              measure=MacsTimer(macs_of(model)))
    b = plan["budget"]
    text = summary_markdown({"arch": "vgg11", "data": {"spec": "cifar10"}, "sparsity": 1e-4, "percent": 0.5,
                             "budget": b, "channels_before": plan["channels_before"],
                             "channels_after": plan["channels_after"], "stages": {}, "command": "compress slim"})
    assert "pruned to a p50 latency of 5.5 ms (ort-cpu, batch 1)" in text
    assert "p50 latency 5.5 ms at batch 1 on ort-cpu" in text
    assert f"{b['met']:.3f} ms" in text and f"{b['full']:.3f} ms" in text and "opset 17" in text


def test_a_slimming_run_resumes_pruning_only_for_the_same_latency_target(tmp_path):
    from compress.stages.slim import _prune_differences

    plan = {"min_keep": 0.2, "round_to": 1, "percent": None,
            "budget": {"target": "latency_ms", "asked": 2.0, "backend": "ort-cpu"}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    same = lambda budget: not _prune_differences(  # noqa: E731
        tmp_path, PruneRequest(min_keep=0.2, round_to=1, **(budget or {"percent": 0.5})))
    assert same({"target_latency_ms": 2.0, "backend": "ort-cpu"})
    assert not same({"target_latency_ms": 1.5, "backend": "ort-cpu"})
    assert _prune_differences(tmp_path, PruneRequest(min_keep=0.2, round_to=8, target_latency_ms=2.0)) == [
        "round_to 1 → 8"]  # resumed on a CPU whose --round-to auto resolves otherwise: the message says so
    assert not same({"target_latency_ms": 2.0, "backend": "openvino"})
    assert not same({"target_macs": 0.5})
    assert not same(None)


def test_the_real_harness_prunes_to_a_target_between_the_unpruned_and_the_floor_latency():
    """ort-cpu on this machine. The target is the geometric mean of the unpruned and the smallest
    structure's latency measured beforehand, a wide margin on both sides for a busy machine; only what
    the plan records is checked, never a time. The VM can switch between speed states about 2x apart
    between those measurements and the search (the floor once measured 0.078 ms before and 0.163 ms
    inside it, with tests running beside it), so a target the search finds out of reach is measured
    again, up to three times."""
    from compress.errors import CompressError
    from compress.slimming import least_budget, prune

    model = lively(create_model("vgg11", width=0.25))
    timer = latency_budget.HarnessTimer(latency_budget.LatencySettings(iters=50, threads=1))
    floor = copy.deepcopy(model)
    prune(floor, None, EXAMPLE, target_macs=least_budget(model, EXAMPLE))
    for attempt in range(3):
        target = (timer(model, EXAMPLE)["p50_ms"] * timer(floor, EXAMPLE)["p50_ms"]) ** 0.5
        try:
            pruned, plan = latency_budget.prune_to_latency(
                copy.deepcopy(model), EXAMPLE, PruneRequest(target_latency_ms=target, iters=50, threads=1))
            break
        except CompressError as exc:
            if "cannot be met" not in str(exc) or attempt == 2:
                raise
    b = plan["budget"]
    assert b["met"] <= target < b["full"] and b["macs_met"] < 1.0
    assert b["macs_met"] == pytest.approx(macs_of(pruned) / macs_of(create_model("vgg11", width=0.25)))
    assert len(b["candidates"]) == 8 and b["candidates"][0]["macs_fraction"] == 1.0
    assert all(c["p50_ms"] > 0 and c["cv"] >= 0 for c in b["candidates"])
    assert b["machine"]["onnxruntime"] and b["machine"]["threads"] == 1


def test_prune_command_takes_a_latency_target(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from hostile_support import make_model_dir

    from compress.cli import main

    make_model_dir(tmp_path / "m")
    full = {}

    def fake_timer(settings):
        def measure(model, example):
            macs = macs_of(model)
            full.setdefault("macs", macs)  # the unpruned model is timed first
            return {"p50_ms": 1.0 + 9.0 * macs / full["macs"], "cv": 0.0}
        return measure

    monkeypatch.setattr(latency_budget, "HarnessTimer", fake_timer)
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m"), "--target-latency", "5.5", "--cost-aware",
                                       "--out", str(tmp_path / "p")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "p50 latency budget 5.5 ms on ort-cpu" in result.output and "met" in result.output
    plan = json.loads((tmp_path / "p" / "plan.json").read_text())
    meta = json.loads((tmp_path / "p" / "model.json").read_text())
    assert plan["budget"]["target"] == "latency_ms" and plan["budget"]["importance"] == "|γ| / macs share"
    assert meta["pruning"]["budget"] == plan["budget"]
    replay = CliRunner().invoke(main, ["prune", str(tmp_path / "m"), "--plan", str(tmp_path / "p" / "plan.json"),
                                       "--out", str(tmp_path / "q")], catch_exceptions=False)
    assert replay.exit_code == 0, replay.output
    assert json.loads((tmp_path / "q" / "model.json").read_text())["widths"] == meta["widths"]


@pytest.mark.parametrize("budget,passes,message", [
    ({"target_latency_ms": 2.0, "backend": "ort-cpu"}, 2, "prunes once"),
    ({"target_latency_ms": 2.0, "backend": "openvino-gpu"}, 1, "got backend 'openvino-gpu'"),
])
def test_a_slimming_run_refuses_a_latency_budget_it_cannot_keep_before_training(tmp_path, budget, passes, message):
    from compress.data.options import DataOptions

    with pytest.raises(CompressError, match=message):
        compress.slim("vgg11", DataOptions(str(tmp_path / "data")), tmp_path / "run",
                      compress.SlimOptions(train_recipe=None, finetune_recipe=None, prune=PruneRequest(**budget),
                                           sparsity=0.0, passes=passes))
    assert not (tmp_path / "run" / "sparse").exists()
