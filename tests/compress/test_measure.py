"""compress.measure: the MAC count's forward is bounded before it runs, and leaves the model as it was."""

import pytest
import torch
from torch import nn

from compress import limits
from compress.measure import count_macs, largest_output_bytes


class Cached(nn.Module):
    """Keeps what its first forward computed for the input shape, as ultralytics' Detect keeps anchors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grid = None

    def forward(self, x):
        if self.grid is None or self.grid.shape[-2:] != x.shape[-2:]:
            self.grid = torch.ones(1, 1, *x.shape[-2:], device=x.device)
        return self.conv(x) * self.grid


def test_the_largest_output_is_measured_without_allocating_or_touching_the_model():
    model = Cached()
    assert largest_output_bytes(model, (3, 20, 30)) == 8 * 20 * 30 * 4
    assert model.grid is None and model.conv.weight.device.type == "cpu"
    assert count_macs(model, (3, 20, 30)) == 8 * 3 * 9 * 20 * 30
    assert model.grid.device.type == "cpu"


def test_a_forward_too_large_for_memory_is_refused_before_it_runs(monkeypatch):
    """A stranger's model.json may give any input size up to 16384² px: a tiny network at 4096² took
    2.3 GB for `compress info`, and at 16384² it would take 37 GB."""
    ran = []
    real = Cached.forward
    monkeypatch.setattr(Cached, "forward", lambda self, x: ran.append(x.device.type) or real(self, x))
    monkeypatch.setattr(limits, "available_memory", lambda: 256 * 2**20)
    with pytest.raises(limits.TooLargeError, match=r"a forward of one 3x4096x4096 image .* more than the"):
        count_macs(Cached(), (3, 4096, 4096))
    assert ran == ["meta"]


def test_the_model_s_own_hooks_do_not_run_on_the_meta_copy():
    """The copy kept count_macs' hooks: every convolution was counted twice."""
    model, seen = Cached(), []
    model.conv.register_forward_hook(lambda _m, _i, out: seen.append(out.device.type))
    largest_output_bytes(model, (3, 8, 8))
    assert seen == []


def test_a_model_that_reads_values_is_counted_as_before():
    class ReadsValues(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * float(x.abs().max() > -1)  # .item() cannot run on meta tensors

    model = ReadsValues(3, 4, 1)
    assert largest_output_bytes(model, (3, 8, 8)) is None
    assert count_macs(model, (3, 8, 8)) == 4 * 3 * 8 * 8
