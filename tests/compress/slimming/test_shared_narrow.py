"""shared="narrow": a pre-activation ResNet's residual stream pruned as one group of all its readers, with
the projection shortcut that reads it without a BN gated by its input weights; no channel selection,
so no Gather in the exported network."""

import copy

import onnx
import pytest
import torch
from slimming_support import run_without_loss
from tests_support import randomize_bn

from compress import PruneRequest, TargetedSparsity
from compress.channel_select import SelectBatchNorm2d
from compress.errors import CompressError
from compress.measure import layer_widths
from compress.models import create_model
from compress.slimming import prune, removal_preview, zero_removed_channels

EXAMPLE = torch.zeros(1, 3, 32, 32)
GONE = list(range(16))  # stream channels of stage 2 (64 wide at half width) that every reader drops


def preresnet():
    return randomize_bn(create_model("preresnet20", width=0.5), seed=2)


def silence_stage2_stream(model, *, shortcut: bool = True):
    """γ = 0 for GONE at every BN that reads stage 2's stream; the projection of stage 3, which reads the
    stream raw, loses those inputs too when `shortcut`."""
    with torch.no_grad():
        for bn in (model.layer2[1].bn1, model.layer3[0].bn1):
            bn.weight[GONE] = 0.0
        if shortcut:
            model.layer3[0].downsample.weight[:, GONE] = 0.0
    return model


def bn_total(model) -> int:
    return sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_narrow_removes_stream_channels_every_reader_drops_and_computes_the_same():
    model = silence_stage2_stream(preresnet())
    original = copy.deepcopy(model)
    percent = 0.5 * 2 * len(GONE) / bn_total(model)  # the threshold lands on the zeros, and only they go
    pruned, plan = prune(model, percent, EXAMPLE, shared="narrow", min_keep=0.0)
    assert plan["shared"] == "narrow" and not plan["selections"]
    assert not any(isinstance(m, SelectBatchNorm2d) for m in pruned.modules())
    stream = next(g for g in plan["groups"] if "layer2.1.bn1" in g["bn_layers"])
    assert set(stream["bn_layers"]) == {"layer2.1.bn1", "layer3.0.bn1"}
    assert stream["channels_before"] - stream["channels_after"] == len(GONE)
    widths = layer_widths(pruned)
    for name in ("layer2.0.conv3", "layer2.0.downsample", "layer2.1.conv3"):
        assert widths[name]["out_channels"] == 64 - len(GONE)  # the stream itself is narrower
    assert widths["layer3.0.downsample"]["in_channels"] == 64 - len(GONE)
    assert plan["removed_gamma_max"] == 0.0  # γ and the shortcut's weights of what went were zero
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():  # exact against the network as it was: β of the removed channels is folded forward
        assert (pruned(x) - original(x)).abs().max().item() < 1e-4


def test_a_nonzero_shortcut_weight_makes_the_removal_inexact_and_says_so():
    model = silence_stage2_stream(preresnet(), shortcut=False)
    percent = 0.5 * 2 * len(GONE) / bn_total(model)
    pruned, plan = prune(copy.deepcopy(model), percent, EXAMPLE, shared="narrow", min_keep=0.0)
    assert plan["removed_gamma_max"] > 1e-3  # the shortcut read what was removed: not exact, and recorded
    # What the self-check held it to: the unpruned network with the plan's γ and shortcut weights zeroed.
    reference = copy.deepcopy(model)
    zero_removed_channels(reference, plan, EXAMPLE, beta=False)
    assert float(reference.layer3[0].downsample.weight.detach()[:, GONE].abs().max()) == 0.0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (pruned(x) - reference(x)).abs().max().item() < 1e-4
        assert (pruned(x) - model(x)).abs().max().item() > 1e-3


def test_select_keeps_the_stream_whole_where_narrow_cuts_it():
    model = preresnet()
    sel, sel_plan = prune(copy.deepcopy(model), None, EXAMPLE, target_macs=0.5)
    nar, nar_plan = prune(copy.deepcopy(model), None, EXAMPLE, target_macs=0.5, shared="narrow")
    assert sel_plan.get("shared") == "select" and sel_plan["selections"]
    assert any(isinstance(m, SelectBatchNorm2d) for m in sel.modules())
    assert nar_plan["budget"]["met"] <= 0.5 and not nar_plan["selections"]
    assert not any(isinstance(m, SelectBatchNorm2d) for m in nar.modules())


def test_plan_replay_takes_the_plans_own_mode():
    model = preresnet()
    pruned, plan = prune(copy.deepcopy(model), None, EXAMPLE, target_macs=0.5, shared="narrow")
    replayed, _ = prune(copy.deepcopy(model), None, EXAMPLE, plan=plan)  # no shared= given: the plan says
    assert layer_widths(replayed) == layer_widths(pruned)
    select_plan = prune(copy.deepcopy(model), None, EXAMPLE, target_macs=0.5)[1]
    with pytest.raises(CompressError, match="the plan was made with shared='select'"):
        prune(copy.deepcopy(model), None, EXAMPLE, plan=select_plan, shared="narrow")


def test_exported_narrowed_network_has_no_gather(tmp_path):
    from compress.exporting.onnx_export import export_onnx

    model, _ = prune(preresnet(), None, EXAMPLE, target_macs=0.5, shared="narrow")
    meta = {"arch": "preresnet20", "classes": [str(i) for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3,
            "source_sha256": "0" * 64, "toolkit_version": "0.1.0"}
    path = export_onnx(model, tmp_path / "m.onnx", input_size=[3, 32, 32], metadata=meta)
    assert not [n for n in onnx.load(str(path)).graph.node if n.op_type == "Gather"]


def test_preview_names_the_shortcut_and_targeted_sparsity_zeroes_its_weights():
    model = preresnet()
    request = PruneRequest(target_macs=0.5, min_keep=0.2, shared="narrow")
    preview = removal_preview(model, None, EXAMPLE, target_macs=0.5, min_keep=0.2, shared="narrow")
    raw = {n for n in preview if "downsample" in n}
    assert raw, "a stream channel that goes takes its column of the projection reading the stream raw"
    run_without_loss(model, TargetedSparsity(prune=request), steps=100, input_size=(3, 32, 32))
    _, plan = prune(model, None, EXAMPLE, target_macs=0.5, min_keep=0.2, shared="narrow")
    assert plan["removed_gamma_max"] == 0.0


def test_an_unknown_mode_is_refused():
    with pytest.raises(CompressError, match="shared must be one of select, narrow"):
        PruneRequest(target_macs=0.5, shared="gather")
    with pytest.raises(CompressError, match="shared must be one of select, narrow"):
        prune(preresnet(), None, EXAMPLE, target_macs=0.5, shared="gather")
    _, plan = prune(preresnet(), None, EXAMPLE, target_macs=0.5)
    with pytest.raises(CompressError, match="shared must be one of select, narrow, got 'gather'"):
        prune(preresnet(), None, EXAMPLE, plan=plan, shared="gather")  # the mode's name, not the plan's
    with pytest.raises(CompressError, match="the plan's shared is 'gather'"):
        prune(preresnet(), None, EXAMPLE, plan={**plan, "shared": "gather"})


def test_a_narrowed_channel_scores_the_mean_of_its_readers_and_a_coupled_one_the_largest():
    import torchvision

    from compress.slimming.units import pruning_units

    model = preresnet().eval()
    modules = dict(model.named_modules())
    stream = next(g for g in pruning_units(model, EXAMPLE, shared="narrow").groups
                  if "layer2.1.bn1" in g.bn_names)
    readers = torch.stack([modules[n].weight.detach().abs() for n in stream.bn_names])
    assert len(stream.bn_names) == 2
    assert torch.allclose(stream.scores, readers.mean(0))  # not the largest: a channel one reader uses is shared
    assert not torch.allclose(stream.scores, readers.amax(0))

    # BNs that scale the two sides of an addition (a post-activation ResNet) keep the largest in either mode.
    resnet = randomize_bn(torchvision.models.resnet18(num_classes=10), seed=3).eval()
    modules = dict(resnet.named_modules())
    for shared in ("narrow", "select"):
        added = next(g for g in pruning_units(resnet, torch.zeros(1, 3, 64, 64), shared=shared).groups
                     if g.root_name == "conv1")
        scales = torch.stack([modules[n].weight.detach().abs() for n in added.bn_names])
        assert len(added.bn_names) == 3 and torch.allclose(added.scores, scales.amax(0)), shared
