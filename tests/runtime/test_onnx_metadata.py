"""compress.* ONNX metadata as untrusted data: parsed strictly, bounded, type-checked; foreign keys kept."""

import json

import pytest

from compress.runtime.errors import ArtifactError
from compress.runtime.onnx_metadata import decode_metadata

GOOD = {"compress.classes": '["a", "b"]', "compress.mean": "[0.5, 0.5, 0.5]", "compress.std": "[0.25, 0.25, 0.25]",
        "compress.input_size": "[3, 8, 8]", "compress.precision": "fp32"}


def test_our_keys_are_decoded_and_foreign_ones_kept_as_text():
    meta = decode_metadata({**GOOD, "names": "{0: 'person', 1: 'bicycle'}", "stride": "32"})
    assert meta["classes"] == ["a", "b"] and meta["input_size"] == [3, 8, 8] and meta["precision"] == "fp32"
    assert meta["names"] == "{0: 'person', 1: 'bicycle'}"  # an ultralytics export's Python literal, as is


@pytest.mark.parametrize("key,value,words", [
    ("classes", "[" * 100_000 + "]" * 100_000, "nests JSON deeper than 8 levels"),
    ("classes", '["a", "a"]', "names a class twice"),
    ("classes", '{"a": 1}', "must be a JSON list of class names"),
    ("classes", "[1, 2]", "must be a JSON list of class names"),
    ("classes", '["a", ', "is not valid JSON"),
    ("mean", "[0.5, NaN, 0.5]", "is nan"),
    ("std", "[0.25, 0, 0.25]", "above 0"),
    ("mean", "[0.5]", "has 1 values for 3 input channels"),
    ("input_size", "[3, 1000000, 1000000]", "H, W <= 16384"),
    ("input_size", "[3, 8]", "[C, H, W]"),
    ("classes", json.dumps(["c"] * 10) + " " * (2 * 1024**2), "above the bound of 1.0 MiB"),
])
def test_bad_values_are_refused_naming_the_key(key, value, words):
    with pytest.raises(ArtifactError) as err:
        decode_metadata({**GOOD, f"compress.{key}": value}, "m.onnx")
    assert words in str(err.value) and "m.onnx" in str(err.value) and "\n" not in str(err.value)
