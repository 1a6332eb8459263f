"""Engine sidecars: an engine is refused when its sidecar is missing, broken, or disagrees with
the running TensorRT, the GPU, or the engine file. Pure Python: no TensorRT needed."""

import json

import pytest

from compress.exporting.engine_sidecar import check_sidecar, read_sidecar, sidecar_path, write_sidecar
from compress.exporting.errors import SidecarError

INFO = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": (8, 7), "precision": "fp16",
        "profile": {"input": "input", "min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [32, 3, 32, 32]},
        "onnx_sha256": "a" * 64, "build_time_s": 12.5}


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"\x00" * 100)
    write_sidecar(path, {**INFO, "engine_size": 100})
    return path


def test_matching_sidecar_is_accepted(engine):
    info = check_sidecar(engine, "10.3.0", "Orin", "8.7")
    assert info["precision"] == "fp16" and info["compute_capability"] == "8.7"
    assert sidecar_path(engine).name == "m.engine.json"
    assert check_sidecar(engine, "10.3.0", "Orin", (8, 7))["engine_size"] == 100


@pytest.mark.parametrize("running, words", [
    (("10.7.0", "Orin", "8.7"), "TensorRT 10.3.0"),
    (("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"), "compute capability 8.7"),
    (("10.3.0", "Other Orin", "8.7"), "built on Orin"),
])
def test_mismatch_is_refused_in_one_line(engine, running, words):
    with pytest.raises(SidecarError) as err:
        check_sidecar(engine, *running)
    assert words in str(err.value) and "rebuild" in str(err.value) and "\n" not in str(err.value)


def test_missing_broken_and_stale_sidecars(engine):
    engine.write_bytes(b"\x00" * 99)
    with pytest.raises(SidecarError, match="replaced or truncated"):
        check_sidecar(engine, "10.3.0", "Orin", "8.7")
    sidecar_path(engine).write_text("{")
    with pytest.raises(SidecarError, match="not valid JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"format": "compress.engine/1"}))
    with pytest.raises(SidecarError, match="lacks"):
        read_sidecar(engine)
    sidecar_path(engine).unlink()
    with pytest.raises(SidecarError, match="no sidecar"):
        check_sidecar(engine, "10.3.0", "Orin", "8.7")


def test_writing_needs_every_documented_field(tmp_path):
    with pytest.raises(ValueError, match="engine_size"):
        write_sidecar(tmp_path / "x.engine", INFO)
    assert not sidecar_path(tmp_path / "x.engine").exists()


def test_a_key_written_twice_is_refused(engine):
    text = sidecar_path(engine).read_text()
    doubled = text.replace('"precision": "fp16"', '"precision": "int8", "precision": "fp16"', 1)
    assert doubled != text
    sidecar_path(engine).write_text(doubled)
    with pytest.raises(SidecarError, match="'precision' appears twice"):
        read_sidecar(engine)
