"""The rules for ops between layers: flattening a feature map into a classifier, slices with fixed bounds,
and an op the rules do not know (its channels stay, the plan names it)."""

import copy

import torch
from slimming_support import prune_exactly
from tests_support import randomize_bn
from torch import nn

from compress import slimming

EXAMPLE = torch.zeros(1, 3, 8, 8)


class FlattenHead(nn.Module):
    """A 2×2 map flattened into a linear layer (torchvision's VGG does it with 7×7): channel c is 4 features."""

    def __init__(self, unknown=False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(32, 4)
        self.unknown = unknown

    def forward(self, x):
        x = self.features(x)
        if self.unknown:  # an op whose effect on channels the rules do not list
            x = torch.einsum("nchw->nchw", x)
        return self.fc(torch.flatten(x, 1))


def test_a_flattened_map_loses_every_feature_of_a_removed_channel():
    pruned, _, plan, rel = prune_exactly(randomize_bn(FlattenHead(), seed=3), EXAMPLE, percent=0.5, min_keep=0.0)
    assert rel <= 1e-5
    assert pruned.fc.in_features == 4 * pruned.features[3].out_channels < 32


def test_an_unknown_op_keeps_its_channels_and_the_plan_names_it():
    model = randomize_bn(FlattenHead(unknown=True), seed=3)
    pruned, plan = slimming.prune(copy.deepcopy(model), 0.5, EXAMPLE, min_keep=0.0)
    assert pruned.features[3].out_channels == 8 and pruned.fc.in_features == 32
    assert {"layers": ["features.3"], "channels": 8, "reason": "they reach einsum in the model's forward"} \
        in plan["skipped"]
    assert pruned.features[0].out_channels < 8


class SliceHead(nn.Module):
    """GhostNet's pattern and a slice short of the end: `[:, :6]` of 8 channels keeps fixed bounds."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(6, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.b(self.a(x)[:, :6])
        return self.fc(x[:, :8].mean((2, 3)))  # to the end: free


def test_slices_with_fixed_bounds_keep_the_channels_before_their_end():
    pruned, _, plan, rel = prune_exactly(randomize_bn(SliceHead(), seed=5), EXAMPLE, percent=0.6, min_keep=0.0)
    assert rel <= 1e-5
    assert pruned.a[0].out_channels >= 6 and pruned.b[0].out_channels < 8
    assert any(s["reason"] == "a slice [0:6] in the model's forward keeps fixed bounds" for s in plan["skipped"])



class FromTheEnd(SliceHead):
    def forward(self, x):
        return self.fc(self.b(self.a(x)[:, -6:]).mean((2, 3)))


def test_a_slice_counting_from_the_end_keeps_its_layer_and_the_rest_still_prunes():
    """`[:, -6:]` was read as the fixed range [2:8] with only the channels before it kept; after pruning the
    code's own -6 counts from the new end and read other channels, so the self-check refused the whole model."""
    pruned, _, plan, rel = prune_exactly(randomize_bn(FromTheEnd(), seed=5), EXAMPLE, percent=0.4, min_keep=0.0)
    assert rel <= 1e-5
    assert pruned.a[0].out_channels == 8 and pruned.b[0].out_channels < 8
    assert any(s["reason"] == "a slice [-6:] in the model's forward counts from the end" for s in plan["skipped"])
