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
