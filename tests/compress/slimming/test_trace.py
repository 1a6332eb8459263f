"""The recorded forward: ops with their arguments, tensors with their shapes, and code that reads a
tensor's channel count; nothing of the recording may stay in the model."""

import copy
import pickle

import torch
from tests_support import randomize_bn
from torch import nn

from compress import slimming
from compress.slimming.trace import trace


class HeadsFromShape(nn.Module):
    """Attention-like code: reads C from the input, then views another tensor with it (YOLO11's PSA)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.qkv = nn.Conv2d(8, 8, 1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        self.seen = x.shape  # a module keeping a shape, as ultralytics' Detect does
        v = self.qkv(x).view(b, 2, 4, h * w)
        return self.head(self.body(v.reshape(b, c, h, w) + x))


def test_the_trace_records_ops_shapes_and_channel_reads():
    model = HeadsFromShape().eval()
    t = trace(model, torch.zeros(1, 3, 8, 8))
    assert [n.op for n in t.nodes if n.op != "layer"] == ["relu", "view", "reshape", "add", "relu",
                                                          "adaptive_avg_pool2d", "flatten"]
    assert t.nodes[0].scope == "stem.0" and t.inputs[0].shape == (2, 3, 8, 8)
    assert [(v.shape, scope) for v, scope in t.channel_reads] == [((2, 8, 8, 8), "")]
    assert t.outputs[0].shape == (2, 4)
    assert type(copy.deepcopy(model).seen) is torch.Size  # what the model kept of the trace copies as a size
    list(model.seen)  # and reading it later records nothing
    assert len(t.channel_reads) == 1


def test_channels_whose_count_the_code_reads_stay_and_nothing_of_the_trace_stays_in_the_model():
    model = randomize_bn(HeadsFromShape())
    pruned, plan = slimming.prune(model, 0.5, torch.zeros(1, 3, 8, 8), min_keep=0.0)
    assert pruned.stem[0].out_channels == 8
    assert any(s["reason"] == "code in the forward reads their channel count" for s in plan["skipped"])
    assert pruned.body[0].out_channels < 8
    assert type(pruned.seen) is torch.Size  # the watched shape the forward kept is a plain size again
    pickle.dumps(copy.deepcopy(pruned))
