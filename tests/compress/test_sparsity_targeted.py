import copy

import pytest
import torch
from slimming_support import run_without_loss
from torch import nn

from compress import PruneRequest, TargetedSparsity
from compress.errors import CompressError
from compress.slimming import prune, removal_preview
from compress.sparsity import bn_gammas
from compress.stages.slim import steer_to


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))


def spread_gammas(model):
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for g in bn_gammas(model):
            g.copy_(torch.rand(g.shape, generator=gen) + 0.05)


def removed_by_plan(plan):
    out = {}
    for g in plan["groups"]:
        gone = sorted(set(range(g["channels_before"])) - set(g["kept"]))
        for bn in g["bn_layers"]:
            if gone:
                out[bn] = gone
    return out


@pytest.mark.parametrize("keywords", [{"percent": 0.5}, {"percent": None, "target_macs": 0.4, "importance": "cost"},
                                      {"percent": None, "target_params": 0.5}])
def test_preview_names_exactly_what_prune_removes_and_changes_nothing(keywords):
    model = net()
    spread_gammas(model)
    model.train()
    before = copy.deepcopy(model.state_dict())
    x = torch.zeros(1, 3, 16, 16)
    kw = dict(keywords)
    percent = kw.pop("percent")
    preview = removal_preview(model, percent, x, min_keep=0.25, **kw)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    _, plan = prune(copy.deepcopy(model), percent, x, min_keep=0.25, **kw)
    assert preview == removed_by_plan(plan)
    assert preview  # something is removed, so the comparison says something


def test_preview_refuses_a_plan_and_unknown_keywords():
    with pytest.raises(CompressError, match="plan"):
        removal_preview(net(), 0.5, torch.zeros(1, 3, 8, 8), plan={"percent": 0.5})
    with pytest.raises(TypeError, match="colour"):
        removal_preview(net(), 0.5, torch.zeros(1, 3, 8, 8), colour=1)


def test_only_the_channels_the_prune_removes_are_pulled_and_they_end_at_zero():
    model = net()
    spread_gammas(model)
    start = [g.detach().clone() for g in bn_gammas(model)]
    request = PruneRequest(target_macs=0.4, importance="cost", min_keep=0.25)
    reg = run_without_loss(model, TargetedSparsity(prune=request))
    chosen = removal_preview(net_with(start), None, torch.zeros(1, 3, 16, 16), target_macs=0.4, importance="cost",
                             min_keep=0.25)
    names = {id(m.weight): n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    pulled = 0
    for g, s in zip(bn_gammas(model), start):
        gone = torch.zeros(g.numel(), dtype=torch.bool)
        gone[chosen.get(names[id(g)], [])] = True
        assert torch.all(g.detach()[gone] == 0)
        torch.testing.assert_close(g.detach()[~gone], s[~gone], rtol=0, atol=0)
        pulled += int(gone.sum())
    assert pulled and reg.record()["sparsity_selected"] == pytest.approx(pulled / sum(s.numel() for s in start))
    assert reg.record()["sparsity_selected_at_zero"] == 1.0
    # The prune then removes channels that are exactly zero: nothing but β, which is folded forward.
    _, plan = prune(model, None, torch.zeros(1, 3, 16, 16), target_macs=0.4, importance="cost", min_keep=0.25)
    assert plan["removed_gamma_max"] == 0.0
    assert removed_by_plan(plan) == chosen


def net_with(gammas):
    model = net()
    with torch.no_grad():
        for g, s in zip(bn_gammas(model), gammas):
            g.copy_(s)
    return model


def test_config_refuses_what_it_cannot_steer():
    with pytest.raises(CompressError, match="steered"):
        TargetedSparsity(strength=1e-4)
    with pytest.raises(CompressError, match="selections"):
        TargetedSparsity(selections=0)
    with pytest.raises(CompressError, match="PruneRequest"):
        TargetedSparsity(prune={"percent": 0.5})
    with pytest.raises(CompressError, match="needs that prune"):
        TargetedSparsity().build(net(), [0.1] * 10, input_size=(3, 16, 16))
    with pytest.raises(CompressError, match="input size"):
        TargetedSparsity(prune=PruneRequest(percent=0.5)).build(net(), [0.1] * 10)
    with pytest.raises(CompressError, match="latency"):
        TargetedSparsity(prune=PruneRequest(target_latency_ms=1.0)).build(net(), [0.1] * 10, input_size=(3, 16, 16))


def test_slim_gives_the_config_its_own_prune_request():
    request = PruneRequest(target_macs=0.5, importance="cost")
    steered = steer_to(TargetedSparsity(), request)
    assert steered.prune == request
    assert steered.describe()["prepares"] == "target macs 0.5"


def test_a_resumed_run_decides_its_channels_on_its_first_step():
    model = net()
    spread_gammas(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = TargetedSparsity(prune=PruneRequest(percent=0.5)).build(model, [0.1] * 100, input_size=(3, 16, 16))
    reg.step_index = 37  # what fit sets when it resumes from an epoch's checkpoint
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    reg.step(opt)
    opt.step()
    assert reg.decided_at == 38 and reg.masks
    assert 0.4 < reg.record()["sparsity_selected"] < 0.6  # half the channels, give or take the quantile's ties


def test_logs_and_summaries_say_which_channels_are_pulled():
    from compress.stages._run import sparsity_label
    from compress.stages.summary import _sparsity_text

    config = steer_to(TargetedSparsity(), PruneRequest(target_macs=0.5))
    assert sparsity_label(config) == "proximal, strength auto, on the channels that pruning to target macs 0.5 removes"
    assert _sparsity_text(config.describe()).startswith("proximal L1, strength auto, on the channels")


def test_past_reach_the_pulled_channels_stay_at_exactly_zero_against_the_loss():
    model = net()
    spread_gammas(model)
    steps, lr = 100, 0.1
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    reg = TargetedSparsity(prune=PruneRequest(percent=0.5), reach=0.4).build(model, [lr] * steps,
                                                                               input_size=(3, 16, 16))
    for step in range(steps):
        opt.zero_grad()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        for g in bn_gammas(model):
            g.grad = torch.full_like(g, -1.0)  # the loss defends every γ, harder than the pull at the start
        reg.step(opt)
        opt.step()
        if step + 1 >= 0.4 * steps:
            for g in bn_gammas(model):
                m = reg.masks.get(id(g))
                if m is not None:
                    assert torch.all(g.detach()[m] == 0), step
    assert reg.record()["sparsity_selected_at_zero"] == 1.0
    reg.close()
