"""`compress bench`'s option parsing (compress/cli/bench.py)."""

from click.testing import CliRunner

from compress.cli import main


def test_an_empty_batch_size_in_the_list_is_refused(tmp_path):
    """--batch 1,,2 ran batches 1 and 2, dropping the empty item without a word."""
    for text in ("1,,2", "1,", ",8"):
        result = CliRunner().invoke(main, ["bench", str(tmp_path / "m.onnx"), "--batch", text])
        assert result.exit_code == 2, result.output
        assert f"Invalid value for --batch: empty batch size in {text!r}" in result.output
