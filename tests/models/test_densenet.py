import pytest
import torch
import torch.nn as nn

from compress.models import create_model
from compress.models.densenet import DenseLayer, check_depth


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def test_densenet40_parameter_count():
    model = create_model("densenet40")
    # 1,059,298 ~ "1.06M" for DenseNet-40 (growth 12, no compression)
    assert count_params(model) == 1_059_298
    assert sum(isinstance(m, DenseLayer) for m in model.modules()) == 36
    assert model.conv1.out_channels == 24
    assert model.trans1.conv.in_channels == model.trans1.conv.out_channels == 24 + 12 * 12
    assert model.fc.in_features == 24 + 36 * 12


def test_transitions_halve_resolution():
    model = create_model("densenet7", width=0.25)
    assert isinstance(model.trans1.pool, nn.AvgPool2d)
    x = torch.randn(1, 3, 32, 32)
    x = model.trans1(model.dense1(model.conv1(x)))
    assert x.shape[-1] == 16


@pytest.mark.parametrize("depth", [41, 6, 3])
def test_depth_must_be_3n_plus_4(depth):
    with pytest.raises(ValueError, match="3n\\+4"):
        create_model(f"densenet{depth}")


def test_depth_rule():
    assert check_depth(40) == 12 and check_depth(100) == 32


def test_forward_width_and_classes():
    model = create_model("densenet40", num_classes=100, width=0.25)
    # growth 3, stem 6: 6 + 36 * 3 channels reach the head
    assert model.fc.in_features == 114
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_growth_rate_argument():
    model = create_model("densenet10", growth_rate=4)
    assert model.fc.in_features == 8 + 6 * 4
    with pytest.raises(ValueError, match="growth_rate"):
        create_model("densenet10", growth_rate=0)


@pytest.mark.parametrize("name, kwargs, match", [
    ("densenet3000004", {}, r"depth 3000004 is beyond the bound of 1000"),
    ("densenet1003", {}, r"depth 1003 is beyond the bound of 1000"),
    ("densenet40", {"growth_rate": 10 ** 6}, r"growth_rate 1000000 is beyond the bound of 1024"),
])
def test_sizes_beyond_the_bounds_are_refused_before_anything_is_built(name, kwargs, match):
    with pytest.raises(ValueError, match=match), torch.device("meta"):
        create_model(name, **kwargs)
    assert check_depth(1000) == 332
