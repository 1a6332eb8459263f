"""ONNX metadata: documented `compress.*` keys, JSON lists, decoded back on reading."""

import json

import onnx
import pytest

from compress.exporting.metadata import metadata_of, read_metadata, set_metadata
from export_helpers import CLASSES, MEAN, STD


def test_round_trip_through_an_exported_file(vgg_onnx):
    _, path = vgg_onnx
    meta = read_metadata(path)
    assert meta["classes"] == CLASSES and meta["mean"] == MEAN and meta["std"] == STD
    assert meta["input_size"] == [3, 32, 32] and meta["arch"] == "vgg11" and meta["precision"] == "fp32"
    assert meta["source_sha256"] == "0" * 64 and meta["toolkit_version"] == "0.1.0"
    raw = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    # On disk: prefixed keys, string values, lists as JSON (docs/ARTIFACTS.md).
    assert json.loads(raw["compress.classes"]) == CLASSES and raw["compress.arch"] == "vgg11"
    assert set(raw) >= {f"compress.{k}" for k in ("classes", "mean", "std", "input_size", "arch", "precision",
                                                 "source_sha256", "toolkit_version")}


def test_set_overwrites_and_keeps_foreign_keys():
    model = onnx.ModelProto()
    model.metadata_props.add(key="other.tool", value="x")
    set_metadata(model, {"precision": "fp32", "compress.arch": "a"})
    set_metadata(model, {"precision": "fp16"})
    meta = metadata_of(model)
    assert meta == {"precision": "fp16", "arch": "a", "other.tool": "x"}
    assert len(model.metadata_props) == 3


def test_corrupt_json_list_is_reported():
    model = onnx.ModelProto()
    model.metadata_props.add(key="compress.classes", value="[not json")
    with pytest.raises(ValueError, match="compress.classes"):
        metadata_of(model)


# --- classes are optional (detectors), a list or an {index: name} mapping when present ---------------------

def _meta(**over):
    from export_helpers import metadata

    return metadata(**over)


def test_classes_may_be_absent_or_an_index_mapping():
    from compress.exporting.metadata import class_names, validate_metadata

    meta = _meta()
    del meta["classes"]
    assert "classes" not in validate_metadata(meta) and class_names(validate_metadata(meta)) is None
    assert validate_metadata(_meta(classes=None)).get("classes") is None
    named = validate_metadata(_meta(classes={0: "person", "1": "car"}))
    assert named["classes"] == {"0": "person", "1": "car"} and class_names(named) == ["person", "car"]
    assert class_names(validate_metadata(_meta(classes={"0": "a", "5": "b"}))) is None  # sparse: no list
    assert class_names(validate_metadata(_meta())) == CLASSES


@pytest.mark.parametrize("classes, match", [([], "non-empty list"), (["a", "a"], "listed twice"),
                                            ({}, "map indices"), ({"x": "a"}, "class index 'x'"),
                                            ({"0": 1}, "map indices"), ({True: "a"}, "class index True")])
def test_malformed_classes_are_refused(classes, match):
    from compress.exporting.metadata import validate_metadata

    with pytest.raises(ValueError, match=match):
        validate_metadata(_meta(classes=classes))


def test_accuracy_is_refused_for_a_file_that_is_not_a_classifier(tmp_path):
    import torch

    from compress.data import ImageSet
    from compress.errors import CompressError
    from compress.exporting.onnx_export import export_onnx
    from compress.onnx_eval import evaluate_onnx

    class Pair(torch.nn.Module):
        def __init__(self, outputs: int):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 10, 3)
            self.outputs = outputs

        def forward(self, x):
            y = self.conv(x).mean((2, 3))
            return tuple(y * (k + 2) for k in range(self.outputs))

    data = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), CLASSES)
    path = export_onnx(Pair(3), tmp_path / "p3.onnx", input_size=[3, 32, 32], metadata=_meta())
    with pytest.raises(CompressError, match="not a classifier .*3 outputs"):
        evaluate_onnx(path, data)
    # Two outputs are taken only as probabilities and their logits, which these are not.
    path = export_onnx(Pair(2), tmp_path / "p2.onnx", input_size=[3, 32, 32], metadata=_meta())
    with pytest.raises(CompressError, match="p2.onnx: its first output is not the softmax of its second"):
        evaluate_onnx(path, data)
