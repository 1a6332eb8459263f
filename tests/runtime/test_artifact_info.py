"""What a report says about an artifact from its model.json: every value is checked, a bad one is a warning."""

import json

import onnx
import pytest
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
    attach_model_json(v, tmp_path / "m.onnx", "onnx", tmp_path, one_line)
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


def _engine_with_sidecar(folder, onnx_path, digest):
    from compress.runtime.engine_sidecar import sidecar_path

    engine = folder / "m.engine"
    engine.write_bytes(b"plan")
    sidecar_path(engine).write_text(json.dumps({
        "format": "compress.engine/1", "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
        "precision": "fp16", "profile": {"input": "input", "min": [1, 3, 16, 16], "opt": [1, 3, 16, 16],
                                         "max": [1, 3, 16, 16]},
        "onnx_sha256": digest, "build_time_s": 1.5, "engine_size": 4, "onnx_path": str(onnx_path)}))
    return engine


def test_an_engine_counts_only_the_onnx_file_its_sidecar_hashed(tmp_path, monkeypatch):
    """The sidecar's onnx_path is a stranger's word: it was read from the current directory and counted
    whatever file it named (another model's counts in the report row). Now only the file with the recorded
    onnx_sha256 counts: beside the engine as recorded, from here, or by its name beside the engine."""
    from compress.runtime.artifact_info import engine_onnx_path
    from compress.runtime.file_hash import sha256_file

    built, other = tmp_path / "built", tmp_path / "other"
    built.mkdir()
    other.mkdir()
    onnx.save(tiny_cnn(), str(built / "m.onnx"))
    onnx.save(tiny_cnn(seed=1), str(other / "big.onnx"))
    digest = sha256_file(built / "m.onnx")
    monkeypatch.chdir(tmp_path)
    engine = _engine_with_sidecar(built, "m.onnx", digest)  # recorded relative to the build's folder
    assert engine_onnx_path(engine) == built / "m.onnx"
    engine = _engine_with_sidecar(built, other / "big.onnx", digest)  # names another file (other weights)
    assert engine_onnx_path(engine) is None
    warnings = []
    assert model_counts(engine, "engine", warnings, one_line) is None and "onnx_sha256" in warnings[0]
    engine = _engine_with_sidecar(built, "elsewhere/m.onnx", digest)  # moved beside the engine since
    assert engine_onnx_path(engine) == built / "m.onnx"


def test_a_sidecar_path_to_a_file_beyond_the_onnx_bound_is_not_hashed(tmp_path, monkeypatch):
    """An 8 GB file named by a stranger's sidecar was hashed in full, twice."""
    import compress.runtime.artifact_info as info
    import compress.runtime.file_hash as file_hash

    (tmp_path / "big.bin").write_bytes(b"x" * 4096)
    engine = _engine_with_sidecar(tmp_path, "big.bin", "0" * 64)
    monkeypatch.setattr(info, "MAX_ONNX_BYTES", 1024)
    monkeypatch.setattr(file_hash, "sha256_file", lambda p: pytest.fail(f"hashed {p}"))
    assert info.engine_onnx_path(engine) is None


def test_an_empty_onnx_file_counts_nothing_rather_than_zero(tmp_path):
    (tmp_path / "zero.onnx").write_bytes(b"")
    warnings = []
    assert model_counts(tmp_path / "zero.onnx", "onnx", warnings, one_line) is None
    assert "has no nodes" in warnings[0]
