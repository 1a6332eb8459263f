"""Module attributes pruning rewrites (split sizes) travel through model.json: a pruned network that splits
by an attribute saves, loads and computes the same; a model.json cannot add, retype or resize one; and a
network whose rebuild would compute something else is refused before anything is written."""

import json
import textwrap

import pytest
import torch
from tests_support import randomize_bn

import compress
from compress.attributes import apply_attributes, changed_attributes
from compress.errors import CompressError

SPLITNET = textwrap.dedent('''
    import torch
    from torch import nn

    class SplitNet(nn.Module):
        """Sizes kept in an attribute, as timm's MixedConv2d keeps `splits`."""

        def __init__(self, num_classes=4, scale=1.0):
            super().__init__()
            self.splits = [8, 8]
            self.scale = scale
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.b = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

        def forward(self, x):
            left, right = self.stem(x).split(self.splits, 1)
            return self.head(torch.cat([self.a(left), self.b(right)], 1)) * self.scale
''')
EXAMPLE = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
SAVE = dict(input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, classes=["a", "b", "c", "d"])


@pytest.fixture
def splitnet(tmp_path, monkeypatch):
    (tmp_path / "attr_nets.py").write_text(SPLITNET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("attr_nets")


def _pruned(module):
    model = randomize_bn(module.SplitNet(), seed=3).eval()
    with torch.no_grad():
        model.stem[1].weight[:3] = 0  # three channels of the first part go, none of the second
    compress.prune(model, EXAMPLE[:1], percent=0.1, min_keep=0.0)
    return model


def test_split_sizes_rewritten_by_pruning_are_saved_and_rebuilt(splitnet, tmp_path):
    model = _pruned(splitnet)
    splits = [model.a[0].in_channels, model.b[0].in_channels]
    assert model.splits == splits and splits[0] < 8
    meta = compress.save_model(model, tmp_path / "m", **SAVE)
    assert meta["attributes"] == {"": {"splits": splits}}
    loaded, _ = compress.load_model(tmp_path / "m", trust="attr_nets")
    assert loaded.splits == splits and isinstance(loaded.splits, list)
    torch.testing.assert_close(loaded(EXAMPLE), model(EXAMPLE), rtol=0, atol=0)


def test_an_unpruned_model_records_no_attributes(splitnet, tmp_path):
    meta = compress.save_model(splitnet.SplitNet().eval(), tmp_path / "m", **SAVE)
    assert "attributes" not in meta


def test_changed_attributes_leaves_layers_to_the_widths(splitnet):
    model = _pruned(splitnet)
    reference = splitnet.SplitNet()
    assert changed_attributes(reference, model) == {"": {"splits": model.splits}}


@pytest.mark.parametrize("attributes, message", [
    ({"nowhere": {"splits": [1, 2]}}, "does not have"),
    ({"": {"new_attr": 3}}, "holds None"),
    ({"": {"splits": 5}}, "holds"),  # a list made an int
    ({"": {"splits": [1, 2, 3]}}, "holds"),  # another number of parts
    ({"": {"_private": 1}}, "not a public attribute"),
    ({"": {"splits": [True, 1]}}, "must be an integer"),
    ({"": {"splits": [-1, 1]}}, "must be an integer"),
    ({"stem.0": {"out_channels": 3}}, "does not have"),  # a layer's size is the widths' business
    ({"": {}}, "non-empty"),
    ({"": {"splits": [9, 8]}}, "larger than the"),  # pruning only lowers a size
    # a reviewer's AdaptiveAvgPool2d output_size of 4000: 4·C·4000² bytes before the classifier refused it
    ({"head.0": {"output_size": 4000}}, "larger than the 1 of the unpruned AdaptiveAvgPool2d"),
])
def test_a_model_json_cannot_add_retype_or_resize_an_attribute(splitnet, attributes, message):
    model = splitnet.SplitNet()
    with pytest.raises(CompressError, match=message):
        apply_attributes(model, attributes)
    assert model.splits == [8, 8]


def test_tampered_attributes_in_model_json_are_refused_at_load(splitnet, tmp_path):
    compress.save_model(_pruned(splitnet), tmp_path / "m", **SAVE)
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"] = {"": {"splits": "8,8"}}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CompressError, match=r"attributes\.\.splits must be an integer"):
        compress.load_model(tmp_path / "m", trust="attr_nets")


def test_a_model_whose_rebuild_computes_otherwise_is_refused_before_writing(splitnet, tmp_path):
    model = splitnet.SplitNet().eval()
    model.scale = 2.0  # a float attribute: not a channel count, so it is not recorded
    with pytest.raises(CompressError, match="computes|outputs differ|does not rebuild|rebuild"):
        compress.save_model(model, tmp_path / "m", **SAVE)
    assert not (tmp_path / "m" / "model.json").exists()
