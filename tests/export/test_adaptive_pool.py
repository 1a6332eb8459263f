import pytest
import torch
from torch import nn

from compress.exporting.adaptive_pool import averaging_matrix, exportable_adaptive_pools
from compress.exporting.onnx_export import export_onnx
from compress.exporting.parity import check_parity

META = {"classes": ["a", "b", "c"], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "arch": "test",
        "source_sha256": "0" * 64, "toolkit_version": "test"}


class PoolHead(nn.Module):
    """torchvision VGG's head in miniature: AdaptiveAvgPool2d((7, 7)) over a small map, then Linear."""

    def __init__(self, pool=(7, 7)):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(8))
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        n = 4 * (pool[0] or 2) * (pool[1] or 3)
        self.classifier = nn.Linear(n, 3)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@pytest.mark.parametrize("size_in,size_out", [(2, 7), (3, 7), (5, 3), (7, 7), (13, 6)])
def test_averaging_matrix_matches_adaptive_pooling(size_in, size_out):
    x = torch.randn(2, 3, size_in, size_in + 1)
    rows, cols = averaging_matrix(size_in, size_out), averaging_matrix(size_in + 1, size_out)
    assert torch.allclose(rows @ x @ cols.t(), nn.functional.adaptive_avg_pool2d(x, size_out), atol=1e-6)


@pytest.mark.parametrize("pool", [(7, 7), (None, 7)])
def test_pool_that_does_not_divide_its_input_exports_with_parity(tmp_path, pool):
    torch.manual_seed(0)
    model = PoolHead(pool).eval()  # a 16x24 input leaves a 2x3 map before the pool
    x = torch.randn(4, 3, 16, 24)
    with torch.no_grad():
        expected = model(x)
        with exportable_adaptive_pools(model, x[:1]) as swapped:
            assert swapped == 1 and not isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
            assert torch.allclose(model(x), expected, atol=1e-6)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)  # restored
    path = export_onnx(model, tmp_path / "m.onnx", input_size=[3, 16, 24], metadata=META)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and "avgpool.rows" not in model.state_dict()
    result = check_parity(model, path, x.numpy(), raise_on_failure=False)
    assert result.passed, result.summary()


def test_pools_the_exporter_takes_are_left_alone():
    model = PoolHead((1, 1)).eval()
    with exportable_adaptive_pools(model, torch.randn(1, 3, 16, 24)) as swapped:
        assert swapped == 0 and isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    model = PoolHead((2, 3)).eval()  # divides the 2x3 map exactly
    with exportable_adaptive_pools(model, torch.randn(1, 3, 16, 24)) as swapped:
        assert swapped == 0
