"""onnxruntime and onnxruntime-gpu share one module: the conflict is found from metadata and warned once."""

from importlib import metadata

import pytest

from compress.runtime import ort_packages


def fake_versions(present: dict[str, str]):
    def version(dist):
        if dist in present:
            return present[dist]
        raise metadata.PackageNotFoundError(dist)
    return version


def test_single_distribution_is_quiet():
    found = ort_packages.installed(fake_versions({"onnxruntime": "1.32.0", "numpy": "2.0"}))
    assert found == {"onnxruntime": "1.32.0"}
    assert ort_packages.conflict_message(found) is None


def test_cpu_and_gpu_together_warn_once_with_the_fix(monkeypatch):
    monkeypatch.setattr(ort_packages, "_warned", False)
    lines = []
    version = fake_versions({"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.32.0"})
    message = ort_packages.warn_once(lines.append, version)
    assert lines == [message] and "\n" not in message
    assert "onnxruntime 1.32.0, onnxruntime-gpu 1.32.0" in message
    assert ort_packages.SWITCH_TO_GPU in message
    ort_packages.warn_once(lines.append, version)
    assert len(lines) == 1  # once per process


def test_this_environment_matches_its_metadata():
    found = ort_packages.installed()
    if not found:
        pytest.skip("no ONNX Runtime distribution installed here")
    assert (ort_packages.conflict_message(found) is None) == (len(found) == 1)
