import copy

import pytest
import torch
from torch import nn
from tests_support import randomize_bn

from compress import slimming
from compress.errors import CompressError
from compress.models import create_model
from compress.sparsity import SparsityRegularizer

EXAMPLE = torch.zeros(1, 3, 32, 32)


MODELS = {
    "vgg11": lambda: create_model("vgg11", width=0.125),
    "preresnet20": lambda: create_model("preresnet20"),
    "densenet16": lambda: create_model("densenet16"),
    "resnet18": lambda: create_model("resnet18"),
    "mobilenet_v2": lambda: create_model("mobilenet_v2"),
}


@pytest.mark.parametrize("name", MODELS)
def test_pruning_is_exact_when_removed_channels_are_zeroed(name):
    """γ = β = 0 on the channels a plan removes: the physically pruned network gives the same logits.

    For a selection, the BN's removed channels then feed ReLU(0) = 0 to its one consumer: the reference
    for dropping them for that consumer alone."""
    model = randomize_bn(MODELS[name]())
    _, plan = slimming.prune(copy.deepcopy(model), 0.4, EXAMPLE, min_keep=0.1)
    assert plan["channels_after"] < plan["channels_before"]
    if name in ("preresnet20", "densenet16"):  # BNs on the residual stream / concatenation: selections
        assert any(s["channels_after"] < s["channels_before"] for s in plan["selections"])
    slimming.zero_removed_channels(model, plan, EXAMPLE, beta=True)
    reference = copy.deepcopy(model)
    pruned, replay = slimming.prune(model, 0.4, EXAMPLE, plan=plan)
    assert replay["channels_after"] == plan["channels_after"]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        diff = (pruned(x) - reference(x)).abs().max().item()
    assert diff < 1e-4
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in reference.parameters())


def test_beta_compensation_is_exact_for_1x1_and_linear_consumers():
    """With γ = 0 but β ≠ 0 the removed channels emit ReLU(β); compensation folds it forward exactly.

    MobileNetV2's pruned BN channels feed 1×1 convolutions and the classifier, where folding is exact.
    """
    model = randomize_bn(create_model("mobilenet_v2"), seed=1)
    _, plan = slimming.prune(copy.deepcopy(model), 0.4, EXAMPLE)
    slimming.zero_removed_channels(model, plan, EXAMPLE, beta=False)
    reference = copy.deepcopy(model)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pruned, _ = slimming.prune(copy.deepcopy(model), 0.4, EXAMPLE, plan=plan)
        uncompensated, _ = slimming.prune(copy.deepcopy(model), 0.4, EXAMPLE, plan=plan, compensate=False)
        ref = reference(x)
        assert (pruned(x) - ref).abs().max().item() < 1e-4
        assert (uncompensated(x) - ref).abs().max().item() > 1e-2


def test_beta_compensation_reduces_error_with_padded_convolutions():
    """In VGG the consumers are padded 3×3 convs: exact inside, approximate at borders, far better than none."""
    model = randomize_bn(create_model("vgg11", width=0.25), seed=2)
    _, plan = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE)
    slimming.zero_removed_channels(model, plan, EXAMPLE, beta=False)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        comp, _ = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, plan=plan)
        raw, _ = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, plan=plan, compensate=False)
        assert (comp(x) - ref).abs().mean() < 0.5 * (raw(x) - ref).abs().mean()


def test_l1_subgradient_adds_lambda_sign_gamma():
    model = create_model("vgg11", width=0.125)
    bns = slimming.bn_layers(model)
    bns[0].weight.data[:2] = torch.tensor([-0.3, 0.4])
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    before = [bn.weight.grad.clone() for bn in bns]
    SparsityRegularizer(model, 1e-2).step()  # what slimming.add_l1_subgradient did
    for bn, g in zip(bns, before):
        assert torch.allclose(bn.weight.grad - g, 1e-2 * torch.sign(bn.weight.detach()))
    assert bns[0].weight.grad[0] - before[0][0] == pytest.approx(-1e-2)


def test_global_threshold_is_the_percent_quantile_of_all_gammas():
    model = create_model("vgg11", width=0.125)
    gammas = []
    for i, bn in enumerate(slimming.bn_layers(model)):
        bn.weight.data = torch.linspace(0.01, 1.0, bn.num_features) * (i + 1)
        gammas.append(bn.weight.detach().abs())
    all_g = torch.cat(gammas).sort().values
    thr = slimming.global_threshold(model, 0.3)
    assert thr == pytest.approx(float(all_g[int(0.3 * all_g.numel())]))
    assert float((all_g < thr).float().mean()) == pytest.approx(0.3, abs=1 / all_g.numel())


def test_floor_keeps_a_fraction_of_every_layer():
    """A layer whose γ are all under the threshold keeps the floor, its largest-γ channels."""
    scores = torch.tensor([0.01, 0.05, 0.02, 0.04, 0.03, 0.001, 0.0, 0.002, 0.003, 0.004])
    kept = slimming.choose_kept(scores, threshold=0.5, min_keep=0.2, min_channels=1, round_to=1)
    assert kept == [1, 3]
    assert slimming.choose_kept(scores, 0.5, min_keep=0.0, min_channels=1, round_to=1) == [1]
    assert len(slimming.choose_kept(scores, 0.025, min_keep=0.0, min_channels=1, round_to=4)) == 4


def test_floor_protects_a_collapsed_layer_in_a_real_model():
    model = randomize_bn(create_model("vgg11", width=0.25))  # γ as initialized (all 0.5) tie: refused
    bns = slimming.bn_layers(model)
    bns[-1].weight.data.fill_(1e-4)  # late layer driven to zero by sparsity
    pruned, plan = slimming.prune(model, 0.3, EXAMPLE, min_keep=0.25)
    last = [g for g in plan["groups"] if bns[-1] is dict(model.named_modules()).get(g["bn_layers"][0])]
    assert last and last[0]["channels_after"] == -(-last[0]["channels_before"] // 4)
    assert last[0]["floor_applied"]
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_round_to_multiple():
    model = randomize_bn(create_model("vgg11", width=0.25))
    _, plan = slimming.prune(model, 0.5, EXAMPLE, round_to=8)
    for g in plan["groups"]:
        assert g["channels_after"] % 8 == 0 or g["channels_after"] == g["channels_before"]


def test_round_to_auto_is_the_cpu_convolution_block(monkeypatch):
    import compress.runtime.cpu_features

    monkeypatch.setattr(compress.runtime.cpu_features, "nchwc_block", lambda: 4)
    model = randomize_bn(create_model("vgg11", width=0.25))
    _, plan = slimming.prune(model, 0.5, EXAMPLE, round_to="auto")
    assert plan["round_to"] == 4
    assert all(g["channels_after"] % 4 == 0 for g in plan["groups"])
    with pytest.raises(CompressError, match="whole number >= 1 or 'auto'"):
        slimming.prune(create_model("vgg11", width=0.25), 0.5, EXAMPLE, round_to="sixteen")


def test_percent_out_of_range_is_refused():
    with pytest.raises(CompressError, match="percent"):
        slimming.prune(create_model("vgg11", width=0.125), 1.0, EXAMPLE)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_pruned_model_comes_back_in_the_mode_it_came_in(training):
    model = randomize_bn(create_model("vgg11", width=0.125)).train(training)
    slimming.prune(model, 0.3, EXAMPLE)
    assert all(m.training is training for m in model.modules())


def test_plan_for_another_model_is_refused():
    _, plan = slimming.prune(randomize_bn(create_model("vgg11", width=0.25)), 0.5, EXAMPLE)
    with pytest.raises(CompressError, match="channels"):
        slimming.prune(create_model("vgg11", width=0.125), 0.5, EXAMPLE, plan=plan)


def test_recalibration_matches_the_statistics_of_the_data():
    model = create_model("vgg11", width=0.125).eval()
    first_bn = slimming.bn_layers(model)[0]
    first_bn.running_mean.fill_(5.0)
    x = torch.randn(40, 3, 32, 32)
    slimming.recalibrate_batchnorm(model, [x[:20], x[20:]])
    with torch.no_grad():
        pre = model.features[0](x)
    assert torch.allclose(first_bn.running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-5)
    assert not model.training and first_bn.momentum == 0.1


def test_grouped_convolution_runs_keep_the_same_positions():
    from compress.slimming import choose_kept

    # Two runs of four channels; position 1 is strong in the second run only (mean 0.475), position 3 nowhere.
    scores = torch.tensor([0.9, 0.0, 0.8, 0.1, 0.7, 0.95, 0.6, 0.05])
    kept = choose_kept(scores, 0.5, min_keep=0.0, min_channels=1, round_to=1, conv_groups=2)
    assert kept == [0, 2, 4, 6]
    assert choose_kept(scores, 0.4, min_keep=0.0, min_channels=1, round_to=1, conv_groups=2) == [0, 1, 2, 4, 5, 6]
    # The floor counts positions: 50% of four positions, in both runs.
    low = choose_kept(torch.zeros(8), 0.5, min_keep=0.5, min_channels=1, round_to=1, conv_groups=2)
    assert len(low) == 4 and {i % 4 for i in low[:2]} == {i % 4 for i in low[2:]}


@pytest.mark.parametrize("where", ["weight", "running_var"])
def test_a_network_with_nan_is_refused_not_passed_by_a_check_of_nothing(where):
    """Every output NaN: the self-check compared no value, reported 0.0 and passed the prune."""
    import compress

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    with torch.no_grad():
        getattr(model[4], where)[0] = float("nan") if where == "weight" else float("inf")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(compress.CompressError, match=f"4.{where} holds NaN or Inf values"):
        compress.prune(model, torch.zeros(1, 3, 16, 16), percent=0.3)
    after = model.state_dict()
    assert all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)  # left unchanged
    assert [m.num_features for m in model if isinstance(m, nn.BatchNorm2d)] == [8, 8]


def test_a_network_whose_outputs_are_never_finite_is_refused():
    import compress
    from compress.slimming.selfcheck import SelfCheckError

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            y = self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
            return y * float("inf") * 0  # NaN everywhere, from finite weights

    model = Broken().eval()
    with torch.no_grad():
        model.bn.weight.uniform_(0.05, 1)
    with pytest.raises(SelfCheckError, match="hold no finite value"):
        compress.prune(model, torch.zeros(1, 3, 16, 16), percent=0.3)
