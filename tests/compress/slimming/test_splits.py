"""Splits along channels: chunk (YOLOv8's C2f, YOLO11's C3k2), sizes kept in an attribute (timm's
MixedConv2d), and sizes fixed in code (left alone, with the reason in the plan)."""

import copy
import os

import pytest
import torch
from slimming_support import prune_exactly
from tests_support import randomize_bn
from torch import nn

from compress import slimming


class ChunkBlock(nn.Module):
    """C2f's pattern: one convolution, chunked in two; the second half feeds a bottleneck; all concatenated."""

    def __init__(self, c=8):
        super().__init__()
        self.cv1 = nn.Sequential(nn.Conv2d(3, 2 * c, 1, bias=False), nn.BatchNorm2d(2 * c), nn.SiLU())
        self.m = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU())
        self.cv2 = nn.Sequential(nn.Conv2d(3 * c, 8, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.m(y[-1]) + y[-1])
        return self.head(self.cv2(torch.cat(y, 1)))


class FixedSplit(ChunkBlock):
    def forward(self, x):
        y = list(self.cv1(x).split([8, 8], 1))  # sizes written in the code: they cannot follow a pruning
        y.append(self.m(y[-1]))
        return self.head(self.cv2(torch.cat(y, 1)))


EXAMPLE = torch.zeros(1, 3, 16, 16)


def test_a_chunked_tensor_keeps_equal_halves_and_prunes_exactly():
    model = randomize_bn(ChunkBlock(), seed=1)
    with torch.no_grad():
        model.cv1[1].weight[:8] = torch.linspace(0.01, 0.1, 8)  # the first half would go first, alone
    pruned, _, plan, rel = prune_exactly(model, EXAMPLE, percent=0.3, min_keep=0.0)
    assert rel <= 1e-5
    # The second half keeps all 8 above the threshold, so the first keeps 8 as well: equal by keeping.
    assert pruned.cv1[0].out_channels == 16 and plan["channels_after"] < plan["channels_before"]


class ChunkBranches(nn.Module):
    """One BN'd convolution chunked in two, each half into its own convolution (CSP's and Res2Net's split)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.a, self.b = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        p, q = self.conv(x).chunk(2, dim=1)
        return self.fc(torch.cat([self.a(p), self.b(q)], 1).mean((2, 3)))


def test_equal_halves_never_remove_a_channel_above_the_threshold():
    """Half A with 6 channels at γ = β = 0, half B with 2: the threshold is 0, and the halves were made equal
    at the mean count (4 each), which removed two of B's live channels; the output moved by 2.4% while
    the self-check (which silences the same channels) passed. timm's CSP and Res2Net networks moved 0.9-4.6%."""
    model = randomize_bn(ChunkBranches(), seed=1).eval()
    with torch.no_grad():
        for i in (0, 1, 2, 3, 4, 5, 8, 9):
            model.conv[1].weight[i] = 0.0
            model.conv[1].bias[i] = 0.0
    reference = copy.deepcopy(model)
    _, plan = slimming.prune(model, 0.3, EXAMPLE, min_keep=0.0)
    assert plan["threshold"] == 0.0 and plan["removed_gamma_max"] == 0.0
    assert model.conv[0].out_channels == 12 and model.a.in_channels == model.b.in_channels == 6  # B's 6 each
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-6)


def test_split_sizes_fixed_in_code_leave_their_channels_alone_with_the_reason():
    model = randomize_bn(FixedSplit(), seed=1)
    pruned, plan = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, min_keep=0.0)
    assert pruned.cv1[0].out_channels == 16
    assert any("split sizes [8, 8]" in s["reason"] and "fixed in its code" in s["reason"] for s in plan["skipped"])
    assert plan["channels_after"] < plan["channels_before"]  # the rest still prunes


timm = pytest.importorskip("timm", reason="timm is optional; the dev extra installs it")


def test_timm_mixnet_updates_its_split_sizes_and_prunes_exactly():
    """MixedConv2d splits its input by sizes it keeps in `splits`: they must follow the pruning."""
    from timm.layers import MixedConv2d

    model = randomize_bn(timm.create_model("mixnet_s", pretrained=False))
    pruned, _, plan, rel = prune_exactly(model, torch.zeros(1, 3, 64, 64), percent=0.4, min_keep=0.1)
    assert rel <= 1e-5
    mixed = [m for m in pruned.modules() if isinstance(m, MixedConv2d) and len(m.splits) > 1]
    assert all([c.in_channels for c in m.values()] == list(m.splits) for m in mixed)  # sizes follow the convolutions
    unpruned = [m for m in timm.create_model("mixnet_s").modules() if isinstance(m, MixedConv2d) and len(m.splits) > 1]
    assert any(list(m.splits) != list(o.splits) for m, o in zip(mixed, unpruned))
    rewritten = {(r["module"], r["attribute"]): r["sizes"] for r in plan["split_sizes"]}
    assert rewritten and all(list(dict(pruned.named_modules())[m].splits) == v for (m, a), v in rewritten.items())


def test_timm_cross_stage_partial_split_removes_only_channels_at_zero():
    """cs3darknet_s splits its stages' expansion into equal parts (`expand_chs`): with 40% of every BN's
    channels at γ = β = 0, the prune at a threshold of 0 removed live channels (γ up to 0.6) from the fuller
    part and moved the output by 0.9%."""
    model = randomize_bn(timm.create_model("cs3darknet_s", pretrained=False, num_classes=5), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            gone = torch.randperm(bn.num_features, generator=g)[:int(0.4 * bn.num_features)]
            bn.weight[gone] = 0.0
            bn.bias[gone] = 0.0
    reference = copy.deepcopy(model)
    _, plan = slimming.prune(model, 0.3, torch.zeros(1, 3, 64, 64))
    assert plan["threshold"] == 0.0 and plan["removed_gamma_max"] == 0.0 and plan["pruned_fraction"] > 0.2
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5 * float(reference(x).abs().max()))


ultralytics = pytest.importorskip("ultralytics", reason="ultralytics is optional; the dev extra installs it")


def _yolo(cfg):
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn.tasks import DetectionModel

    return randomize_bn(DetectionModel(cfg, verbose=False))


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml"])
def test_yolo_detectors_from_their_yaml_prune_30_percent_exactly(cfg):
    """torch-pruning (and this code before) raised IndexError on C2f's chunk; YOLO11's attention reads
    its channel count, so its channels stay."""
    model = _yolo(cfg)
    pruned, _, plan, rel = prune_exactly(model, torch.zeros(1, 3, 96, 96))
    assert rel <= 1e-5
    assert plan["pruned_fraction"] > 0.15
    assert plan["check"]["max_relative_difference"] <= plan["check"]["tolerance"]
    if cfg.startswith("yolo11"):
        assert any("reads their channel count" in s["reason"] for s in plan["skipped"])


@pytest.mark.slow
def test_yolov8n_at_640_prunes_and_passes_the_self_check():
    model = _yolo("yolov8n.yaml")
    _, plan = slimming.prune(model, 0.3, torch.zeros(1, 3, 640, 640))
    assert plan["pruned_fraction"] > 0.15
    assert plan["check"]["max_relative_difference"] <= plan["check"]["tolerance"]


def test_wrong_channels_cut_in_yolos_class_branch_alone_are_refused(monkeypatch):
    """The first output holds boxes in pixels beside class scores, so a change to the scores alone is
    below 1e-4 of its scale; the raw class logits YOLO also returns are checked on their own scale. The
    diagnosis used to name a right box layer (model.22.cv2.0.2, the first consumer with a constant folded
    into its bias) in each of the three attempts."""
    from compress.errors import CompressError
    from compress.slimming import surgery
    from compress.slimming.reference import flatten_outputs

    model = _yolo("yolov8n.yaml")
    for m in model.model[-1].cv3.modules():
        m.class_branch = True  # an attribute: a retry puts copies of the modules back, and copies keep it
    real = surgery._cut_batchnorm

    def wrong_in_the_class_branch(m, gone):
        wrong = gone and getattr(m, "class_branch", False)
        real(m, list(range(m.num_features - len(gone), m.num_features)) if wrong else gone)

    monkeypatch.setattr(surgery, "_cut_batchnorm", wrong_in_the_class_branch)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        before = [t.clone() for t in flatten_outputs(model.eval()(x))]
    with pytest.raises(CompressError, match=r"self-check tolerance .*first diverge at model\.22\.cv3\."):
        slimming.prune(model, 0.3, torch.zeros(1, 3, 96, 96))
    with torch.no_grad():
        after = flatten_outputs(model(x))
    assert all(torch.equal(a, b) for a, b in zip(after, before))
