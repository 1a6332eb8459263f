"""Regular files of a bounded size only, checked before anything opens them."""

import os

import pytest

from compress.runtime.errors import ArtifactError, InputFileError
from compress.runtime.input_files import check_regular_file, read_regular_file, size_text


def test_a_regular_file_is_read_and_measured(tmp_path):
    (tmp_path / "m.engine").write_bytes(b"plan" * 10)
    assert check_regular_file(tmp_path / "m.engine", "engine", 40) == 40
    assert read_regular_file(tmp_path / "m.engine", "engine", 40) == b"plan" * 10
    link = tmp_path / "link.engine"
    link.symlink_to(tmp_path / "m.engine")  # a link to a regular file is that file
    assert read_regular_file(link, "engine", 40) == b"plan" * 10


def test_bounds_and_kinds_are_named(tmp_path):
    (tmp_path / "big.onnx").write_bytes(b"x" * 41)
    with pytest.raises(InputFileError, match="ONNX file .*big.onnx is 41 bytes, above the bound of 40 bytes"):
        read_regular_file(tmp_path / "big.onnx", "ONNX file", 40)
    os.mkfifo(tmp_path / "p.onnx")
    with pytest.raises(InputFileError, match="p.onnx is a FIFO"):
        check_regular_file(tmp_path / "p.onnx", "ONNX file")
    with pytest.raises(InputFileError, match="ONNX file not found"):
        check_regular_file(tmp_path / "none.onnx", "ONNX file")
    assert issubclass(InputFileError, ArtifactError) and issubclass(InputFileError, ValueError)


def test_sizes_read_as_people_write_them():
    assert [size_text(n) for n in (512, 2048, 3 * 1024**2, 2 * 1024**3)] == ["512 bytes", "2.0 KiB", "3.0 MiB",
                                                                           "2.0 GiB"]
