"""What a report says about an artifact from its model.json: every value is checked, a bad one is a warning."""

import json

import onnx
from onnx_builders import tiny_cnn

from compress.runtime.artifact_info import attach_model_json, model_counts
from compress.runtime.bench import one_line


def _row():
    return {"warnings": [], "model_json": None, "reference_accuracy": None, "widths": None}


def test_values_of_the_wrong_type_become_warnings_not_numbers(tmp_path):
    onnx.save(tiny_cnn(), str(tmp_path / "m.onnx"))
    (tmp_path / "model.json").write_text(json.dumps({
        "accuracy": 91, "params": "lots", "macs": -1,
        "widths": {"conv": {"type": "Conv2d", "out_channels": "4"}, "fc": {"type": "Linear", "out_features": 10},
                   "odd": ["x"], "bn": {"type": "BatchNorm2d", "num_features": 4}}}))
    v = _row()
    attach_model_json(v, tmp_path / "m.onnx", "onnx", None, one_line)
    assert v["reference_accuracy"] is None and v["widths"] == {"fc": 10}
    assert any("accuracy '91' is not a fraction" in w for w in v["warnings"]) and any("conv" in w for w in v["warnings"])
    warnings = []
    assert model_counts(tmp_path, "model_dir", warnings, one_line) == {"params": None, "macs": None, "flops": None,
                                                                         "source": "model.json"}


def test_a_model_json_that_is_not_an_object_is_unreadable(tmp_path):
    (tmp_path / "model.json").write_text("[1, 2]")
    v = _row()
    attach_model_json(v, tmp_path / "m.onnx", "onnx", None, one_line)
    assert v["model_json"] is None and "not a JSON object" in v["warnings"][0]


def test_an_engine_with_a_broken_sidecar_counts_nothing_and_says_so(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"plan")
    (tmp_path / "m.engine.json").write_text('{"format": "compress.engine/1"}')
    warnings = []
    assert model_counts(tmp_path / "m.engine", "engine", warnings, one_line) is None
    assert "lacks" in warnings[0]
