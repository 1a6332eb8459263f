"""`compress bench`'s option parsing (compress/cli/bench.py)."""

import pytest
from click.testing import CliRunner

from compress.cli import main


def test_an_empty_batch_size_in_the_list_is_refused(tmp_path):
    """--batch 1,,2 ran batches 1 and 2, dropping the empty item without a word."""
    for text in ("1,,2", "1,", ",8"):
        result = CliRunner().invoke(main, ["bench", str(tmp_path / "m.onnx"), "--batch", text])
        assert result.exit_code == 2, result.output
        assert f"Invalid value for --batch: empty batch size in {text!r}" in result.output


def test_a_power_source_this_machine_lacks_is_one_line_before_any_export(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("compress.benchmarking._runnable_paths", lambda *a, **k: pytest.fail("exported first"))
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "m.onnx"), "--power", "tegrastats"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == ("Error: --power tegrastats: no tegrastats on this machine's PATH "
                                     "(it ships with Jetson Linux)")
