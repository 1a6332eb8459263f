"""The self-check's second look in float64: a change too small for the first look's per-tensor scale is
refused, a wrong folded constant is refused, and where float64 cannot be exact the record says so."""

import copy
import json

import pytest
import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.errors import CompressError
from compress.slimming import compensate, float64_check, surgery

EXAMPLE = torch.zeros(1, 3, 32, 32)


class BoxesAndScores(nn.Module):
    """One output tensor: 4 box channels in pixels (tens) beside 6 score channels near zero, as a
    detector's concatenated head returns them."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.box = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 4, 1))
        self.score = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                   nn.Conv2d(32, 6, 1))

    def forward(self, x):
        x = self.stem(x)
        return torch.cat([self.box(x) * 300.0, torch.sigmoid(self.score(x) - 6.0)], dim=1)


def _boxes_and_scores():
    torch.manual_seed(0)
    model = randomize_bn(BoxesAndScores(), seed=3)
    for m in model.score.modules():
        m.score_branch = True  # an attribute: a retry puts copies of the modules back, and copies keep it
    return model


def _wrong_in_the_score_branch(monkeypatch):
    real = surgery._cut_batchnorm

    def cut(m, gone):  # as many channels as it should, but the last ones, in the score branch only
        wrong = gone and getattr(m, "score_branch", False)
        real(m, list(range(m.num_features - len(gone), m.num_features)) if wrong else gone)

    monkeypatch.setattr(surgery, "_cut_batchnorm", cut)


def test_a_wrong_cut_in_the_small_scores_beside_large_boxes_is_seen_only_in_float64(monkeypatch):
    model = _boxes_and_scores()
    right, _ = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE)
    _wrong_in_the_score_branch(monkeypatch)
    with monkeypatch.context() as m:  # the first look alone: the wrong scores pass it
        m.setattr(float64_check, "float64_check", lambda *a, **k: {"not_run": "switched off by the test"})
        wrong, plan = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE)
    assert plan["check"]["max_relative_difference"] <= 1e-4 and not plan["skipped"]
    assert "score.0" in {g["root"] for g in plan["groups"] if len(g["kept"]) < 32}
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = right.eval()(x)[:, 4:], wrong.eval()(x)[:, 4:]
    assert float(((got - want).abs() / want.abs()).max()) > 0.05  # scores 5% or more off, unseen

    pruned, plan = slimming.prune(model, 0.5, EXAMPLE)
    reasons = {s["layers"][0]: s["reason"] for s in plan["skipped"]}
    assert "score.0" in reasons and "self-check" in reasons["score.0"]
    assert "box.0" not in reasons
    assert plan["check"]["float64"]["max_relative_difference"] <= float64_check.TOLERANCE


def test_a_float64_refusal_names_the_module_and_leaves_the_model_unchanged(monkeypatch):
    _wrong_in_the_score_branch(monkeypatch)
    monkeypatch.setattr(slimming.engine, "ATTEMPTS", 1)
    model = _boxes_and_scores()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(CompressError, match=r"^pruning would change BoxesAndScores's output beyond float64 "
                                            r"precision \(max relative difference .* > 1e-10 .*\); outputs first "
                                            r"diverge at score\.\d \((BatchNorm2d|ReLU|Conv2d)\); the model is left "
                                            r"unchanged$"):
        slimming.prune(model, 0.5, EXAMPLE)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_every_plan_records_the_float64_look():
    _, plan = slimming.prune(_boxes_and_scores(), 0.5, EXAMPLE)
    exact = plan["check"]["float64"]
    assert 0 <= exact["max_relative_difference"] <= exact["tolerance"] == 1e-10


def test_a_constant_folded_wrong_is_refused_before_anything_else(monkeypatch):
    real = compensate.fold_deltas

    def doubled(model, analysis, deltas):
        return real(model, analysis, {k: 2 * v for k, v in deltas.items()})

    monkeypatch.setattr(compensate, "fold_deltas", doubled)
    monkeypatch.setattr(slimming.engine, "ATTEMPTS", 1)
    with pytest.raises(CompressError, match=r"^the constant folded for \S+ is not the one compensation measured; "
                                            r"the model is left unchanged$"):
        slimming.prune(_boxes_and_scores(), 0.5, EXAMPLE)


class CastsInside(nn.Module):
    """Runs its head in float32 whatever it is given, as some mixed-precision code does."""

    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                               nn.Flatten())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head.float()(self.f(x).float())


def test_a_model_that_computes_in_float32_inside_is_pruned_on_the_first_look_and_says_so():
    _, plan = slimming.prune(randomize_bn(CastsInside(), seed=1), 0.5, EXAMPLE)
    assert plan["check"]["max_relative_difference"] <= 1e-4
    assert plan["check"]["float64"] == {"not_run": "CastsInside computes in a lower precision inside (float)"}


class NoDouble(CastsInside):
    def forward(self, x):
        if x.dtype == torch.float64:
            raise RuntimeError("this backend has no float64\nsecond line")
        return self.head(self.f(x))


def test_where_float64_cannot_run_the_record_says_why():
    _, plan = slimming.prune(randomize_bn(NoDouble(), seed=1), 0.5, EXAMPLE)
    assert plan["check"]["float64"] == {"not_run": "RuntimeError: this backend has no float64"}
    assert torch.get_default_dtype() == torch.float32


class MakesItsOwnTensors(BoxesAndScores):
    """A learned offset of a tensor the forward makes itself, in the default dtype."""

    def __init__(self):
        super().__init__()
        self.offset = nn.Linear(4, 10)

    def forward(self, x):
        return super().forward(x) + self.offset(torch.ones(x.shape[0], 4))[:, :, None, None]


def test_the_float64_diagnosis_runs_as_the_comparison_did(monkeypatch):
    """It ran with float32 defaults, so a tensor the forward makes met float64 weights and the whole
    pruning failed instead of leaving the score branch whole."""
    _wrong_in_the_score_branch(monkeypatch)
    model = randomize_bn(MakesItsOwnTensors(), seed=3)
    for m in model.score.modules():
        m.score_branch = True
    _, plan = slimming.prune(model, 0.5, EXAMPLE)
    assert [s["layers"] for s in plan["skipped"]] == [["score.0"]]
    assert "self-check" in plan["skipped"][0]["reason"]
    assert torch.get_default_dtype() == torch.float32


class CopiesAsItself(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.full((10,), 0.5))

    def __deepcopy__(self, memo):  # a frozen module some libraries keep as one instance
        return self

    def forward(self, x):
        return x * self.scale


class WithASharedModule(CastsInside):
    def __init__(self):
        super().__init__()
        self.post = CopiesAsItself()

    def forward(self, x):
        return self.post(self.head(self.f(x)))


def test_a_module_that_its_copies_share_is_not_turned_to_float64():
    pruned, plan = slimming.prune(randomize_bn(WithASharedModule(), seed=1), 0.5, EXAMPLE)
    assert plan["check"]["float64"] == {"not_run": "WithASharedModule shares tensors with its deep copy, so a "
                                                   "float64 copy would change it"}
    assert pruned.post.scale.dtype == torch.float32 and pruned(EXAMPLE).dtype == torch.float32


class ReturnsAFloat32Constant(CastsInside):
    def forward(self, x):
        return self.head(self.f(x)), torch.arange(3, dtype=torch.float32)


def test_an_output_in_a_lower_precision_is_named():
    _, plan = slimming.prune(randomize_bn(ReturnsAFloat32Constant(), seed=1), 0.5, EXAMPLE)
    assert plan["check"]["float64"] == {"not_run": "ReturnsAFloat32Constant computes in a lower precision inside "
                                                   "(its outputs)"}


def test_an_infinite_approximation_is_recorded_as_none_so_the_plan_stays_json(monkeypatch):
    """-inf where the silenced-only reference has it and the pruned network has not (log of a ReLU)
    makes `approximation` infinite, which a strict JSON reader of plan.json refused."""
    from compress.slimming import selfcheck

    real, calls = selfcheck.relative_difference, []

    def later_ones_infinite(got, want):  # the first call is the check itself, the others `approximation`
        calls.append(1)
        return float("inf") if len(calls) >= 2 else real(got, want)

    monkeypatch.setattr(selfcheck, "relative_difference", later_ones_infinite)
    _, plan = slimming.prune(_boxes_and_scores(), 0.5, EXAMPLE)
    assert len(calls) == 3 and plan["check"]["approximation"] is None  # at the example size and a larger one
    assert set(plan["check"]["approximation_by_input"].values()) == {None}
    json.dumps(plan, allow_nan=False)


class HoldsAComplexBuffer(CastsInside):
    def __init__(self):
        super().__init__()
        self.register_buffer("phase", torch.ones(2, dtype=torch.complex64))

    def forward(self, x):
        return self.head(self.f(x))


def test_a_model_with_complex_tensors_is_not_checked_in_float64():
    pruned, plan = slimming.prune(randomize_bn(HoldsAComplexBuffer(), seed=1), 0.5, EXAMPLE)
    assert plan["check"]["float64"] == {"not_run": "HoldsAComplexBuffer holds complex tensors"}
    assert pruned.phase.dtype == torch.complex64


def test_copies_that_would_not_fit_in_memory_are_not_made(monkeypatch):
    from compress import limits

    monkeypatch.setattr(limits, "available_memory", lambda: 0)
    monkeypatch.setattr(limits, "_FLOOR", 0)
    _, plan = slimming.prune(_boxes_and_scores(), 0.5, EXAMPLE)
    assert plan["check"]["float64"]["not_run"].startswith("the self-check's float64 copy needs ")
    assert plan["check"]["float64"]["not_run"].endswith(" of memory available")
