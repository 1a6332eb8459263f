import pytest
import torch
from torch import nn

from compress.errors import CompressError
from compress.sparsity import (
    AUTO_BUDGET,
    Budget,
    SparsityConfig,
    SparsityRegularizer,
    bn_gammas,
    lambda_for_budget,
    optimizer_groups,
    param_groups,
    polarization_of,
    ramp_factor,
)


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def backward(model):
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model.zero_grad()
    model(x).sum().backward()


def test_subgradient_adds_lambda_sign_gamma_to_grads():
    model = small_net()
    gammas = bn_gammas(model)
    with torch.no_grad():
        gammas[0][:4] *= -1  # both signs present
    backward(model)
    before = [g.grad.clone() for g in gammas]
    reg = SparsityRegularizer(model, 0.25, mode="subgradient")
    reg.step(None)
    for g, b in zip(gammas, before):
        torch.testing.assert_close(g.grad - b, 0.25 * torch.sign(g.detach()))
    # Other parameters are left alone.
    conv = model[0].weight
    backward(model)
    grad = conv.grad.clone()
    reg.step(None)
    torch.testing.assert_close(conv.grad, grad)


def test_proximal_zeroes_small_gammas_and_shrinks_the_rest_by_lr_lambda():
    model = small_net()
    gamma = bn_gammas(model)[0]
    with torch.no_grad():
        gamma.copy_(torch.tensor([0.05, -0.05, 0.3, -0.3, 0.09, 1.0, -2.0, 0.0]))
        bn_gammas(model)[1].fill_(0.5)
    # lr 0.1, λ 1: threshold 0.1. No gradient-driven motion: lr only scales the threshold here.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = SparsityRegularizer(model, 1.0, mode="proximal")
    model.zero_grad()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    reg.step(opt)
    opt.step()
    expected = torch.tensor([0.0, 0.0, 0.2, -0.2, 0.0, 0.9, -1.9, 0.0])
    torch.testing.assert_close(gamma.detach(), expected)
    assert int((gamma == 0).sum()) == 4  # exactly zero, not merely small
    torch.testing.assert_close(bn_gammas(model)[1].detach(), torch.full((6,), 0.4))
    # One hook only, however many steps; a step without reg.step() does not shrink.
    reg.step(opt)
    opt.step()
    opt.step()
    torch.testing.assert_close(gamma.detach()[5:7], torch.tensor([0.8, -1.8]))
    assert reg.pull_applied == pytest.approx(0.2)
    reg.step(opt)
    reg.close()
    opt.step()  # hook removed before the step: nothing shrinks
    torch.testing.assert_close(gamma.detach()[5:7], torch.tensor([0.8, -1.8]))


def test_proximal_uses_the_lr_of_the_group_holding_gamma():
    model = small_net()
    with torch.no_grad():
        for g in bn_gammas(model):
            g.fill_(1.0)
    groups = param_groups(model, 5e-4)
    groups[1]["lr"] = 0.5  # γ group
    opt = torch.optim.SGD(groups, lr=0.01)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    reg = SparsityRegularizer(model, 0.2, mode="proximal")
    reg.step(opt)
    opt.step()
    for g in bn_gammas(model):
        torch.testing.assert_close(g.detach(), torch.full_like(g, 0.9))


def test_proximal_needs_the_optimizer():
    reg = SparsityRegularizer(small_net(), 1e-3, mode="proximal")
    with pytest.raises(CompressError, match="optimizer"):
        reg.step()


def test_budget_sets_lambda_from_the_schedule():
    lrs = [0.1] * 50 + [0.01] * 50  # Σ lr = 5.5
    assert lambda_for_budget(1.1, lrs) == pytest.approx(0.2)
    reg = SparsityRegularizer(small_net(), Budget(1.1), mode="proximal", lrs=lrs)
    assert reg.lam == pytest.approx(0.2)
    # Twice the schedule, half the λ: the same total pull.
    assert SparsityRegularizer(small_net(), Budget(1.1), lrs=lrs * 2).lam == pytest.approx(0.1)
    # A ramp over the first half weights those steps less, so λ rises to keep the pull.
    ramped = SparsityRegularizer(small_net(), Budget(1.1), lrs=lrs, ramp=0.5)
    total = sum(ramped.lam_at(i) * lr for i, lr in enumerate(lrs))
    assert total == pytest.approx(1.1)
    assert ramped.lam > 0.2
    auto = SparsityRegularizer(small_net(), "auto", mode="proximal", lrs=lrs)
    assert auto.lam == pytest.approx(AUTO_BUDGET["proximal"] / 5.5)


def test_applied_proximal_pull_matches_the_budget():
    model = small_net()
    with torch.no_grad():
        for g in bn_gammas(model):
            g.fill_(10.0)  # never reaches zero: every step's shrink is visible
    lrs = [0.1 * (1 - i / 40) for i in range(40)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = SparsityRegularizer(model, Budget(0.7), mode="proximal", lrs=lrs, ramp=(0.25, 0.5))
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        reg.step(opt)
        opt.step()
    assert reg.pull_applied == pytest.approx(0.7)
    torch.testing.assert_close(bn_gammas(model)[0].detach(), torch.full((8,), 9.3))


def test_ramp_factor_and_bad_settings():
    assert ramp_factor(0.1, 0.5) == pytest.approx(0.2)
    assert ramp_factor(0.6, 0.5) == 1.0
    assert ramp_factor(0.2, (0.3, 0.5)) == 0.0 and ramp_factor(0.4, (0.3, 0.5)) == pytest.approx(0.5)
    assert ramp_factor(0.5, None) == 1.0
    with pytest.raises(CompressError, match="ramp"):
        SparsityRegularizer(small_net(), 1e-4, ramp=0.5)  # no schedule length
    with pytest.raises(CompressError, match="ramp"):
        SparsityRegularizer(small_net(), 1e-4, total_steps=10, ramp=(0.6, 0.2))
    with pytest.raises(CompressError, match="schedule"):
        SparsityRegularizer(small_net(), Budget(1.0))
    with pytest.raises(CompressError, match="mode"):
        SparsityRegularizer(small_net(), 1e-4, mode="l2")
    with pytest.raises(CompressError, match="strength"):
        SparsityRegularizer(small_net(), -1.0)
    with pytest.raises(CompressError, match="budget"):
        Budget(float("nan"))


def test_param_groups_exempt_exactly_the_gammas():
    model = small_net()
    groups = param_groups(model, 5e-4)
    gammas = {id(g) for g in bn_gammas(model)}
    decayed, free = groups
    assert decayed["weight_decay"] == 5e-4 and free["weight_decay"] == 0.0
    assert {id(p) for p in free["params"]} == gammas
    assert len(decayed["params"]) + len(free["params"]) == len(list(model.parameters()))
    no_beta = param_groups(model, 5e-4, beta_decay=False)
    betas = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(p) for p in no_beta[1]["params"]} == gammas | betas
    # fit(): a plain λ keeps today's optimizer (γ decayed); a config drops γ from weight decay by default.
    assert len(optimizer_groups(model, 5e-4, 1e-4)) == 1
    assert {id(p) for p in optimizer_groups(model, 5e-4, SparsityConfig())[1]["params"]} == gammas
    assert len(optimizer_groups(model, 5e-4, SparsityConfig(gamma_decay=True))) == 1


def test_polarization_on_hand_made_gammas():
    g = torch.tensor([0.0, 1e-4, 5e-4, 5e-3, 0.2, 0.3, 0.4, 1.0])
    p = polarization_of(g, percent=0.5)
    assert p["gamma_under_1e-3"] == pytest.approx(3 / 8)
    assert p["gamma_under_1e-2"] == pytest.approx(4 / 8)
    # Pruning half removes up to 5e-3 and keeps from 0.2: gap (0.2 - 5e-3) / 1.0.
    assert p["gamma_gap"] == pytest.approx(0.195)
    assert p["gamma_pruned_max"] == pytest.approx(5e-3)
    flat = polarization_of([torch.linspace(0.1, 1.0, 10)], percent=0.5)
    assert flat["gamma_under_1e-3"] == 0.0
    assert flat["gamma_gap"] == pytest.approx(0.1)
    assert flat["gamma_pruned_max"] == pytest.approx(0.5)
    # Negative γ count by magnitude.
    assert polarization_of(-g, percent=0.5) == p


def test_warmup_is_bounded_by_a_tenth_of_the_run():
    from compress.training import FINETUNE_LR, Recipe

    short = Recipe.named("fast", epochs=1)  # asks for 1 warm-up epoch
    assert short.warmup == pytest.approx(0.1)
    assert short.lr_at(0.1) == pytest.approx(0.1)  # peak reached after a tenth, then decays
    assert short.lr_at(0.99) < 0.01
    assert Recipe.named("fast", epochs=30).warmup == 1.0
    ft = Recipe.finetuning("fast", epochs=5)
    assert ft.lr == FINETUNE_LR["fast"] and ft.warmup == pytest.approx(0.5)
    assert Recipe.finetuning("fast", epochs=5, lr=0.3).lr == 0.3
    assert Recipe.finetuning("paper").lr == Recipe.named("paper").lr


def defended_gammas(n=100, force=0.2):
    """One BN whose γ the 'loss' defends with a force that grows across channels: under the proximal
    update γ_i dies exactly when λ exceeds force_i, so the fraction at zero tells what λ the run chose."""
    model = nn.Sequential(nn.Conv2d(3, n, 1), nn.BatchNorm2d(n))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    return model, torch.linspace(0, force, n)


def run_defended(model, defence, reg, steps, lr=0.1):
    gamma = model[1].weight
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        gamma.grad = -defence * torch.sign(gamma.detach())
        reg.step(opt)
        opt.step()


@pytest.mark.parametrize("percent", [0.3, 0.5, 0.7])
def test_auto_steers_lambda_until_the_planned_percent_sits_at_zero(percent):
    model, defence = defended_gammas()
    steps = 1000
    reg = SparsityRegularizer(model, "auto", mode="proximal", lrs=[0.1] * steps, percent=percent)
    start = reg.lam
    run_defended(model, defence, reg, steps)
    zero = float((model[1].weight.detach().abs() < 1e-3).float().mean())
    # The budget's λ (0.01) alone kills ~5% here; the controller must reach the percent (+2% margin)
    # without running away and killing the defended rest.
    assert percent <= zero <= percent + 0.05
    assert reg.lam > 5 * start
    assert reg.record()["gamma_under_1e-3"] == pytest.approx(zero)


def test_auto_never_goes_under_the_budget_and_resumes_its_lambda():
    model, defence = defended_gammas(force=0.0)  # nothing defended: the budget alone is plenty
    steps = 400
    reg = SparsityRegularizer(model, "auto", mode="proximal", lrs=[0.1] * steps, percent=0.5)
    floor = reg.lam
    run_defended(model, defence, reg, steps)
    assert reg.lam >= floor
    record = reg.record()
    again = SparsityRegularizer(defended_gammas()[0], "auto", mode="proximal", lrs=[0.1] * steps, percent=0.5)
    record["sparsity_lambda_base"] = 3 * floor
    again.resume_from(record)
    assert again.lam == pytest.approx(3 * floor) and again.start_quantile == record["sparsity_start_quantile"]
    old_log = {k: v for k, v in record.items() if k not in ("sparsity_lambda_base", "sparsity_last_quantile")}
    old_log["sparsity_lambda"] = 2 * floor  # a log written before the base was recorded: the λ it gives
    again.resume_from(old_log)
    assert again.lam == pytest.approx(2 * floor)


def test_a_ramped_auto_lambda_resumes_at_its_steered_value_not_the_ramped_one():
    """The log holds λ × ramp; restoring that halved λ at mid-ramp, and the ramp then applied again."""
    model, defence = defended_gammas(force=0.0)
    steps = 100
    reg = SparsityRegularizer(model, "auto", mode="proximal", lrs=[0.1] * steps, percent=0.5, ramp=0.5)
    run_defended(model, defence, reg, 25)
    record = reg.record()
    again = SparsityRegularizer(defended_gammas()[0], "auto", mode="proximal", lrs=[0.1] * steps, percent=0.5,
                                ramp=0.5)
    again.resume_from(record)
    assert record["sparsity_lambda"] < reg.lam  # what was applied, mid-ramp
    assert again.lam == pytest.approx(reg.lam) and again._last_quantile == reg._last_quantile


def test_auto_needs_a_percent_inside_zero_one_and_budgets_stay_fixed():
    with pytest.raises(CompressError, match="percent"):
        SparsityRegularizer(small_net(), "auto", mode="proximal", lrs=[0.1] * 10, percent=1.0)
    model, defence = defended_gammas()
    reg = SparsityRegularizer(model, Budget(1.0), mode="proximal", lrs=[0.1] * 200)
    lam = reg.lam
    run_defended(model, defence, reg, 200)
    assert reg.lam == lam and not reg.adaptive


def test_slim_aims_the_auto_controller_at_the_percent_it_will_prune():
    from compress.request import PruneRequest
    from compress.stages.slim import steer_to

    auto = SparsityConfig()
    assert steer_to(auto, PruneRequest(percent=0.7)).percent == 0.7
    # Under a MACs budget the percent is unknown in advance: the config keeps its own.
    assert steer_to(auto, PruneRequest(target_macs=0.5)).percent == auto.percent
    assert steer_to(1e-4, PruneRequest(percent=0.7)) == 1e-4


def _small():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        model[1].weight.uniform_(0.05, 1)
    return model, torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))


def test_a_penalty_that_would_reach_no_gamma_is_refused():
    """Called before backward, or given an optimizer without the BN parameters, it did nothing, silently."""
    model, x, y = _small()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = SparsityRegularizer(model, 0.05)
    opt.zero_grad()
    with pytest.raises(CompressError, match="found no gradient on any BN γ, so the penalty would do nothing: call it after loss.backward"):
        reg.step(opt)
    others = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("1.")], lr=0.1)
    for mode in ("subgradient", "proximal"):
        with pytest.raises(CompressError, match="holds none of the model's BN γ"):
            SparsityRegularizer(model, 10.0, mode=mode).step(others)


def test_the_proximal_update_leaves_frozen_gammas_and_finds_added_groups():
    import torch.nn.functional as F

    model, x, y = _small()
    model[1].weight.requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = SparsityRegularizer(model, 1.0, mode="proximal")
    frozen = model[1].weight.detach().clone()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    reg.step(opt)
    opt.step()
    assert torch.equal(model[1].weight, frozen)  # it was soft-thresholded by lr·λ every step
    model[1].weight.requires_grad_(True)
    late = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("1.")], lr=0.1)
    reg = SparsityRegularizer(model, 1.0, mode="proximal")
    late.zero_grad()
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(CompressError, match="holds none"):
        reg.step(late)
    late.add_param_group({"params": [model[1].weight, model[1].bias], "lr": 0.1})
    before = model[1].weight.detach().abs().clone()
    reg.step(late)
    late.step()
    assert float((before - model[1].weight.detach().abs()).min()) > 0.05  # shrunk by about lr·λ = 0.1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1])
def test_a_schedule_with_a_rate_that_is_not_finite_and_positive_is_refused(bad):
    from compress.sparsity import Budget

    model, _, _ = _small()
    with pytest.raises(CompressError, match="step 1 has"):
        SparsityRegularizer(model, Budget(1.0), mode="proximal", lrs=[0.1, bad, 0.1])


def test_a_budget_of_true_is_not_a_pull_of_one():
    from compress.sparsity import Budget

    with pytest.raises(CompressError, match="finite number >= 0, got True"):
        Budget(True)


@pytest.mark.parametrize("strength, options", [(Budget(0.5), {"mode": "proximal"}), ("auto", {"mode": "proximal"}),
                                               (Budget(0.5), {}), (1e-4, {"ramp": 0.5})])
def test_a_step_past_the_schedule_is_refused(strength, options):
    """lrs shorter than the run: the budget (or the ramp) was laid over fewer steps than were taken, and the
    pull went on past it without a word."""
    model = small_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    reg = SparsityRegularizer(model, strength, lrs=[0.1] * 3, **options)
    for _ in range(3):
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        reg.step(opt)
        opt.step()
    with pytest.raises(CompressError, match=r"^SparsityRegularizer.step was called more often than the 3 steps of "
                                            r"its schedule \(lrs or total_steps\)"):
        reg.step(opt)


def test_a_fixed_lambda_without_a_ramp_has_no_schedule_to_outrun():
    model = small_net()
    reg = SparsityRegularizer(model, 1e-4, lrs=[0.1] * 2)
    for _ in range(4):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        reg.step()
    assert reg.step_index == 4


def _train_steps(model, reg, opt, order, steps=3):
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        for call in order:
            reg.step(opt) if call == "reg" else opt.step()


@pytest.mark.parametrize("set_to_none", [True, False])
def test_a_subgradient_step_after_the_optimizer_step_is_refused(set_to_none):
    """The penalty went into gradients already used, and zero_grad() cleared it: no sparsity, no word."""
    torch.manual_seed(0)
    model = small_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt.zero_grad = lambda f=opt.zero_grad: f(set_to_none=set_to_none)
    _train_steps(model, SparsityRegularizer(model, 1e-4), opt, ("reg", "opt"), steps=4)  # the right order
    reg = SparsityRegularizer(model, 1e-4)
    with pytest.raises(CompressError, match=r"^SparsityRegularizer.step came after optimizer.step\(\)"):
        _train_steps(model, reg, opt, ("opt", "reg"))
    assert reg.step_index == 2  # its first call met the optimizer; the second, after its step, is refused
