"""External tensor data of a stranger's ONNX file is bounded before any reader (onnx, ONNX Runtime,
OpenVINO) reads it: a reviewer's 688-byte file with 16 initializers naming one 64 MiB file, no length,
made `compress info` read 1 GiB (6.3 GB of memory, 34 s); 1,000 of them would need terabytes."""

import os

import numpy as np
import onnx
import pytest
from onnx_builders import tiny_cnn

from compress.runtime.errors import InputFileError
from compress.runtime.external_data import check_external_data, check_onnx_file


def _external(tmp_path, name="ext.onnx"):
    model = tiny_cnn()
    onnx.save(tiny_cnn(), tmp_path / name, save_as_external_data=True, location="ext.data", size_threshold=0)
    return model, tmp_path / name


def _rewrite(path, **fields):
    """Every external tensor of `path` with its external_data fields replaced (None drops a field)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        entries = {e.key: e.value for e in tensor.external_data}
        entries.update(fields)
        del tensor.external_data[:]
        for key, value in entries.items():
            if value is not None:
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())


def test_a_model_s_own_external_data_loads_as_it_was_saved(tmp_path):
    from compress.exporting.onnx_file import load_onnx

    model, path = _external(tmp_path)
    loaded = load_onnx(path)
    for want, got in zip(model.graph.initializer, loaded.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(want), onnx.numpy_helper.to_array(got))
    check_onnx_file(path)  # what the ONNX Runtime and OpenVINO runners call first


def test_tensors_that_all_read_the_same_bytes_are_refused_before_any_is_read(tmp_path, monkeypatch):
    import onnx.external_data_helper as helper

    from compress.exporting.errors import OnnxFileError
    from compress.exporting.onnx_file import load_onnx

    _, path = _external(tmp_path)
    _rewrite(path, offset=None, length=None)  # each tensor: the whole file
    monkeypatch.setattr(helper, "load_external_data_for_tensor", lambda *a: pytest.fail("external data was read"))
    with pytest.raises(OnnxFileError, match=r"external tensors claim .* of files that hold .* share bytes"):
        load_onnx(path)
    with pytest.raises(InputFileError, match="share bytes"):
        check_onnx_file(path)


@pytest.mark.parametrize("location", ["../ext.data", "/etc/hostname", "sub/../../ext.data", "..\\ext.data"])
def test_external_data_outside_the_model_s_folder_is_refused(tmp_path, location):
    (tmp_path / "m").mkdir()
    _, path = _external(tmp_path / "m")
    _rewrite(path, location=location)
    with pytest.raises(InputFileError, match="outside the"):
        check_external_data(onnx.load(str(path), load_external_data=False), path)


def test_a_symlink_out_of_the_model_s_folder_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    _, path = _external(tmp_path / "m")
    os.replace(tmp_path / "m" / "ext.data", tmp_path / "elsewhere.data")
    os.symlink(tmp_path / "elsewhere.data", tmp_path / "m" / "ext.data")
    with pytest.raises(InputFileError, match="leads outside"):
        check_onnx_file(path)


def test_a_fifo_as_external_data_is_refused_without_opening_it(tmp_path):
    _, path = _external(tmp_path)
    os.remove(tmp_path / "ext.data")
    os.mkfifo(tmp_path / "ext.data")  # opening it would block until someone writes
    with pytest.raises(InputFileError, match="not a regular file"):
        check_onnx_file(path)


def test_compress_info_and_bench_refuse_it_in_one_line(tmp_path):
    from click.testing import CliRunner

    from compress.cli import main

    _, path = _external(tmp_path)
    _rewrite(path, offset=None, length=None)
    info = CliRunner().invoke(main, ["info", str(path)])
    assert info.exit_code != 0 and "share bytes" in info.output and "Traceback" not in info.output
    bench = CliRunner().invoke(main, ["bench", str(path), "--batch", "1", "--iters", "2"])
    assert bench.exit_code != 0 and "share bytes" in bench.output


def test_external_data_beyond_the_memory_available_is_refused(tmp_path, monkeypatch):
    import compress.runtime.external_data as external_data

    _, path = _external(tmp_path)
    monkeypatch.setattr(external_data, "available_memory", lambda: 100)
    with pytest.raises(InputFileError, match=r"its external tensors hold .* more than the 100 bytes of memory"):
        check_onnx_file(path)


@pytest.mark.parametrize("fields,needle", [
    ({"length": "-258336"}, r"ext.onnx: .*length must be non-negative"),  # onnx's words, the file named
    ({"offset": "-8"}, r"ext.onnx: .*offset must be non-negative"),
    ({"offset": "0", "length": str(1 << 40)}, "which holds"),
])
def test_negative_or_overlong_external_ranges_are_refused_by_the_bound_itself(tmp_path, fields, needle):
    """onnx refused a negative length in its own words, naming no file (a helper's probe, 2026-12-07); a range
    past its file's end is refused by the bound before any reader reads it."""
    _, path = _external(tmp_path)
    _rewrite(path, **fields)
    with pytest.raises(InputFileError, match=needle):
        check_onnx_file(path)
