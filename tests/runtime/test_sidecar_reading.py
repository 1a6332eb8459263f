"""Sidecars read by the runtime (compress.runtime.engine_sidecar): a FIFO, a huge file or a deeply nested one
is refused in one line. (Matching, mismatching and malformed sidecars: tests/export/test_engine_sidecar.py.)"""

import json
import os

import pytest

from compress.runtime.engine_sidecar import MAX_SIDECAR_BYTES, check_sidecar, read_sidecar, sidecar_path
from compress.runtime.errors import ArtifactError, SidecarError

INFO = {"format": "compress.engine/1", "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
        "precision": "fp16", "profile": {"input": "images", "min": [1, 3, 32, 32], "opt": [8, 3, 32, 32],
                                         "max": [32, 3, 32, 32]},
        "onnx_sha256": "a" * 64, "build_time_s": 1.5, "engine_size": 100}


@pytest.fixture
def engine(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"\0" * 100)
    sidecar_path(path).write_text(json.dumps(INFO))
    return path


def test_a_good_sidecar_is_read(engine):
    assert check_sidecar(engine, "10.3.0", "Orin", (8, 7))["profile"]["input"] == "images"
    assert issubclass(SidecarError, ArtifactError)


def test_a_fifo_sidecar_or_engine_is_refused(engine):
    sidecar_path(engine).unlink()
    os.mkfifo(sidecar_path(engine))
    with pytest.raises(SidecarError, match="m.engine.json is a FIFO"):
        read_sidecar(engine)
    os.unlink(sidecar_path(engine))
    engine.unlink()
    os.mkfifo(engine)
    with pytest.raises(SidecarError, match="m.engine is a FIFO"):
        check_sidecar(engine, "10.3.0", "Orin", "8.7")


def test_a_huge_or_deep_sidecar_is_refused_before_parsing(engine):
    sidecar_path(engine).write_text(json.dumps(INFO) + " " * MAX_SIDECAR_BYTES)
    with pytest.raises(SidecarError, match="above the bound of 1.0 MiB"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({**INFO, "metadata": {"x": "[" * 10}})[:-1]
                                    + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(SidecarError) as err:
        read_sidecar(engine)
    assert "deeper than 64 levels" in str(err.value) and "\n" not in str(err.value)


def test_metadata_and_onnx_path_of_the_wrong_type(engine):
    sidecar_path(engine).write_text(json.dumps({**INFO, "onnx_path": 7}))
    with pytest.raises(SidecarError, match="onnx_path must be a path string"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({**INFO, "metadata": ["x"]}))
    with pytest.raises(SidecarError, match="metadata must be an object"):
        read_sidecar(engine)
