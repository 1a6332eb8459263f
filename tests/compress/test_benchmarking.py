"""compress.benchmarking: what `compress bench --data` reads of the artifacts before they are checked."""

import json
import os
import threading

import onnx
from onnx_builders import tiny_cnn

from compress.benchmarking import _input_size


def _model_dir(root, meta):
    root.mkdir()
    (root / "model.json").write_text(json.dumps(meta))
    return root


def test_the_input_size_comes_from_model_json_or_onnx_metadata(tmp_path):
    assert _input_size([_model_dir(tmp_path / "m", {"input_size": [3, 40, 40]})]) == [3, 40, 40]
    model = tiny_cnn()
    onnx.helper.set_model_props(model, {"compress.input_size": "[3, 24, 24]"})
    onnx.save(model, tmp_path / "t.onnx")
    assert _input_size([tmp_path / "t.onnx"]) == [3, 24, 24]


def test_odd_sizes_are_skipped_for_the_artifact_check_to_name(tmp_path):
    """A non-list input_size ended in an unexpected ValueError from int(input_size[-1])."""
    for k, size in enumerate([7, "3x32x32", [3, 32], [3, 0, 32], [3, 32, 1 << 20], [3.0, 32, 32], None]):
        assert _input_size([_model_dir(tmp_path / f"m{k}", {"input_size": size})]) is None


def test_a_huge_model_json_is_not_read(tmp_path):
    """A 1 GiB model.json was read whole (2.1 GB of memory) before the checks that refuse it."""
    root = tmp_path / "big"
    root.mkdir()
    with open(root / "model.json", "wb") as fh:
        fh.truncate(1 << 30)  # sparse: no disk used
    assert _input_size([root]) is None


def test_a_fifo_named_onnx_does_not_block(tmp_path):
    """onnx.load opened a FIFO and waited for a writer forever."""
    os.mkfifo(tmp_path / "fifo.onnx")
    found = []
    reader = threading.Thread(target=lambda: found.append(_input_size([tmp_path / "fifo.onnx"])), daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert not reader.is_alive() and found == [None]


def test_a_size_the_data_cannot_take_is_named_with_its_artifact(tmp_path):
    """bench --data said "input_size must be between 8 and 4096 pixels, got 16384", naming neither the file
    nor the field (a helper's probe, 2026-12-07)."""
    import pytest

    from compress.benchmarking import _sized_for
    from compress.errors import CompressError

    model = tiny_cnn()
    onnx.helper.set_model_props(model, {"compress.input_size": "[3, 16384, 16384]"})
    onnx.save(model, tmp_path / "wide.onnx")
    with pytest.raises(CompressError, match=r"wide.onnx takes 16384x16384 images \(its input_size\); --data's"):
        _sized_for([tmp_path / "wide.onnx"])
    assert _sized_for([_model_dir(tmp_path / "m", {"input_size": [3, 40, 40]})]) == [3, 40, 40]


def test_arguments_of_the_wrong_shape_are_refused_in_a_sentence(tmp_path):
    """A string was taken as a list of one-letter paths ("g: no such file") or backends ("unknown backend
    'o'"), a dict of settings raised AttributeError, and paired blocks with one artifact did nothing."""
    import pytest

    import compress

    onnx.save(tiny_cnn(), tmp_path / "t.onnx")
    settings = compress.BenchSettings(batches=(1,), iters=2)
    path = str(tmp_path / "t.onnx")
    for call, words in [(lambda: compress.bench(path, settings), "artifacts is a list"),
                        (lambda: compress.bench([path], settings, backends="ort-cpu"), "backends is a list"),
                        (lambda: compress.bench([path], {"iters": 2}), "must be a compress.BenchSettings"),
                        (lambda: compress.bench([path], compress.BenchSettings(batches=(1,), iters=2, paired_blocks=6)),
                         "give at least two")]:
        with pytest.raises(compress.CompressError, match=words):
            call()
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(compress.CompressError, match="a symbolic link to nothing"):
        compress.bench([str(tmp_path / "loop")], settings)
