"""Consumer-side channel selection on pre-activation ResNets and DenseNets: the official per-BN counts,
exactness, the model directory, plan replay, a second pass and ONNX export as a Gather."""

import copy

import numpy as np
import onnx
import pytest
import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.artifact import load_model_dir, save_model_dir
from compress.channel_select import SelectBatchNorm2d
from compress.measure import layer_widths
from compress.models import create_model

EXAMPLE = torch.zeros(1, 3, 32, 32)
# Half width keeps these tests quick; the structure, and so the logic under test, is the same.
SHARED = {"preresnet20": lambda: create_model("preresnet20", width=0.5),
          "densenet10": lambda: create_model("densenet10")}


def official_counts(model: nn.Module, percent: float) -> list[int]:
    """Channels kept per BN as the network-slimming authors' pruning scripts compute them: every
    BatchNorm2d's |γ| in one sorted vector, the threshold at index int(total * percent), keep γ > it."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gammas = torch.cat([bn.weight.detach().abs() for bn in bns])
    thr = gammas.sort().values[int(gammas.numel() * percent)]
    return [int((bn.weight.detach().abs() > thr).sum()) for bn in bns]


def kept_per_bn(model: nn.Module, plan: dict) -> list[int]:
    kept = {}
    for g in plan["groups"]:
        assert len(g["bn_layers"]) == 1, "each BN of these networks is its own unit"
        kept[g["bn_layers"][0]] = g["channels_after"]
    for s in plan["selections"]:
        kept[s["bn"]] = s["channels_after"]
    names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert set(kept) == set(names), "every BN is pruned, by its group or by selection"
    return [kept[n] for n in names]


@pytest.mark.parametrize("percent", [0.4, 0.6])
@pytest.mark.parametrize("arch", list(SHARED))
def test_per_bn_counts_equal_the_official_logic_with_the_floor_off(arch, percent):
    model = randomize_bn(SHARED[arch](), seed=1)
    expected = official_counts(model, percent)
    assert min(expected) >= 1  # the floor's one channel must not matter for the comparison
    pruned, plan = slimming.prune(copy.deepcopy(model), percent, EXAMPLE, min_keep=0.0, min_channels=1)
    assert kept_per_bn(model, plan) == expected
    assert plan["selections"], "shared-tensor BNs are pruned by selection"
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_preresnet_keeps_the_residual_stream_and_selects_per_block():
    model = randomize_bn(SHARED["preresnet20"]())
    widths_before = layer_widths(model)
    pruned, plan = slimming.prune(model, 0.5, EXAMPLE, min_keep=0.0)
    sites = {s["bn"] for s in plan["selections"]}
    assert sites == {"layer1.0.bn1", "layer1.1.bn1", "layer2.0.bn1", "layer2.1.bn1", "layer3.0.bn1",
                     "layer3.1.bn1", "bn"}
    for name in ("layer1.0.conv3", "layer1.1.conv3", "layer2.0.downsample", "layer3.1.conv3"):
        assert layer_widths(pruned)[name]["out_channels"] == widths_before[name]["out_channels"]  # stream whole
    block = pruned.layer2[1]
    assert isinstance(block.bn1, SelectBatchNorm2d) and block.bn1.in_channels == 64
    assert block.conv1.in_channels == block.bn1.num_features < 64
    rec = next(s for s in plan["selections"] if s["bn"] == "layer2.1.bn1")
    assert rec["selected"] == block.bn1.index.tolist() and len(rec["selected"]) == rec["channels_after"]
    assert pruned.fc.in_features == pruned.bn.num_features < 128


def test_selection_with_beta_compensation_is_exact_for_1x1_and_linear_consumers():
    """γ = 0, β ≠ 0 on a selection's removed channels: they emit ReLU(β) to the 1×1 conv (or the
    classifier) that follows, and compensation folds it there exactly."""
    model = randomize_bn(SHARED["preresnet20"](), seed=4)
    _, plan = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, min_keep=0.0)
    for g in plan["groups"]:  # only the selections remove channels: their consumers are 1×1 and Linear
        g["kept"] = list(range(g["channels_before"]))
        g["channels_after"] = g["channels_before"]
    units = plan["groups"] + plan["selections"]
    plan["channels_after"] = sum(u["channels_after"] for u in units)
    plan["pruned_fraction"] = 1 - plan["channels_after"] / plan["channels_before"]
    slimming.zero_removed_channels(model, plan, EXAMPLE, beta=False)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        comp, _ = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, plan=plan)
        raw, _ = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, plan=plan, compensate=False)
        assert (comp(x) - ref).abs().max().item() < 1e-4
        assert (raw(x) - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize("arch", list(SHARED))
def test_a_second_pass_narrows_the_selection_and_stays_exact(arch):
    first, plan1 = slimming.prune(randomize_bn(SHARED[arch](), seed=5), 0.4, EXAMPLE, min_keep=0.0)
    _, plan2 = slimming.prune(copy.deepcopy(first), 0.3, EXAMPLE, min_keep=0.0)
    assert plan2["channels_before"] == plan1["channels_after"] > plan2["channels_after"]
    reference = copy.deepcopy(first)
    slimming.zero_removed_channels(reference, plan2, EXAMPLE, beta=True)
    second, _ = slimming.prune(copy.deepcopy(reference), 0.3, EXAMPLE, plan=plan2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (second(x) - reference(x)).abs().max().item() < 1e-4
    for s in plan2["selections"]:
        first_sel = next(r for r in plan1["selections"] if r["bn"] == s["bn"])["selected"]
        assert set(s["selected"]) <= set(first_sel)  # indices stay those of the shared tensor


@pytest.mark.parametrize("arch", list(SHARED))
def test_model_directory_and_plan_replay_rebuild_the_selection(tmp_path, arch):
    model = randomize_bn(SHARED[arch](), seed=6)
    unpruned = copy.deepcopy(model)
    pruned, plan = slimming.prune(model, 0.5, EXAMPLE)
    kwargs = {"num_classes": 10, **({"width": 0.5} if arch.startswith("preresnet") else {})}
    meta = {"arch": arch, "arch_kwargs": kwargs, "classes": [str(i) for i in range(10)],
            "input_size": [3, 32, 32], "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    saved = save_model_dir(pruned, tmp_path / "m", meta)
    selects = {n: w for n, w in saved["widths"].items() if w["type"] == "SelectBatchNorm2d"}
    assert selects and all(len(w["selected"]) == w["num_features"] for w in selects.values())
    loaded, _ = load_model_dir(tmp_path / "m")
    replayed, _ = slimming.prune(unpruned, 0.0, EXAMPLE, plan=plan)
    assert layer_widths(replayed) == layer_widths(pruned) == layer_widths(loaded)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (loaded(x) - pruned(x)).abs().max().item() < 1e-5
        assert (replayed(x) - pruned(x)).abs().max().item() < 1e-5


def test_onnx_export_gathers_constant_indices(tmp_path):
    import onnxruntime as ort

    from compress.exporting.onnx_export import export_onnx

    model, _ = slimming.prune(randomize_bn(create_model("densenet10"), seed=7), 0.5, EXAMPLE)
    meta = {"arch": "densenet10", "classes": [str(i) for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3,
            "source_sha256": "0" * 64, "toolkit_version": "0.1.0"}
    path = export_onnx(model, tmp_path / "m.onnx", input_size=[3, 32, 32], metadata=meta)
    proto = onnx.load(str(path))
    inits = {t.name for t in proto.graph.initializer}
    constants = {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    gathers = [n for n in proto.graph.node if n.op_type == "Gather"]
    n_select = sum(isinstance(m, SelectBatchNorm2d) for m in model.modules())
    assert n_select and len(gathers) == n_select
    assert all(n.input[1] in inits | constants for n in gathers)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4
