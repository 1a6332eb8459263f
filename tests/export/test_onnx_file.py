"""Missing, empty, corrupt and truncated ONNX files give one-line OnnxFileErrors."""

import pytest

from compress.exporting.errors import OnnxFileError
from compress.exporting.onnx_file import load_onnx


def test_a_good_file_loads(vgg_onnx):
    _, path = vgg_onnx
    assert load_onnx(path).graph.node


@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.6, 0.97, 0.999])
def test_truncated_files_are_refused(vgg_onnx, tmp_path, fraction):
    _, path = vgg_onnx
    data = path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(OnnxFileError) as err:
        load_onnx(cut)
    assert "\n" not in str(err.value) and "cut.onnx" in str(err.value)


def test_missing_empty_and_garbage(tmp_path):
    with pytest.raises(OnnxFileError, match="not found"):
        load_onnx(tmp_path / "none.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(OnnxFileError, match="empty"):
        load_onnx(tmp_path / "empty.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xfe not a protobuf \x00" * 50)
    with pytest.raises(OnnxFileError, match="junk.onnx"):
        load_onnx(tmp_path / "junk.onnx")
