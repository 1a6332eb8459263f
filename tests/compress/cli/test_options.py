"""Options that would do nothing where they are given are refused in one line, before any work."""

import pytest
from click.testing import CliRunner

from compress.cli import main

CASES = [
    (["finetune", "M", "--out", "O", "--temperature", "2"], "--temperature only applies with --distill"),
    (["finetune", "M", "--out", "O", "--alpha", "0.5"], "--alpha only applies with --distill"),
    (["prune", "M", "--plan", "F", "--out", "O", "--min-keep", "0.5"], "--min-keep does nothing with --plan"),
    (["prune", "M", "--plan", "F", "--out", "O", "--round-to", "8"], "--round-to does nothing with --plan"),
    (["slim", "--from", "M", "--out", "O", "--pretrain-epochs", "2"], "--pretrain-epochs does nothing with --from"),
    (["quantize", "F", "--out", "O.onnx", "--sensitivity-images", "10"],
     "--sensitivity-images only applies with --sensitivity or --keep-float"),
    (["share", "M", "--out", "O", "--lr", "0.01"], "--lr only applies with --finetune-epochs"),
    (["share", "M", "--out", "O", "--batch-size", "4"], "--batch-size only applies with --finetune-epochs"),
    (["share", "M", "--out", "O", "--test-limit", "10"], "--test-limit only applies with --data"),
    (["share", "--decompress", "F", "--out", "O", "--bits", "4"], "--bits does nothing with --decompress"),
    (["share", "--decompress", "F", "--out", "O", "--data", "cifar10"], "--data does nothing with --decompress"),
    (["import", "F", "--arch", "resnet18", "--out", "O", "--test-limit", "5"], "--test-limit only applies with --data"),
    (["import", "F", "--arch", "resnet18", "--out", "O", "--device", "cpu"], "--device only applies with --data"),
    (["export", "--check-trt", "F.onnx", "--atol", "0.1"], "--atol does nothing with --check-trt"),
    (["export", "--check-trt", "F.onnx", "--onnx", "O.onnx"], "--onnx does nothing with --check-trt"),
    (["export", "--check-trt", "F.onnx", "--static-batch"], "--static-batch does nothing with --check-trt"),
    (["bench", "F.onnx", "--power-interval", "50"], "--power-interval does nothing without a power source"),
    (["bench", "F.onnx", "--power", "none", "--power-interval", "50"],
     "--power-interval does nothing without a power source"),
]


@pytest.mark.parametrize("args, said", CASES, ids=[" ".join(a[:1] + a[-2:-1]) for a, _ in CASES])
def test_an_option_that_would_be_ignored_is_refused_before_any_work(tmp_path, args, said):
    (tmp_path / "M").mkdir()
    (tmp_path / "F").write_text("{}")
    (tmp_path / "F.onnx").write_bytes(b"not read")
    args = [str(tmp_path / a) if a in ("M", "F", "F.onnx", "O", "O.onnx") else a for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert said in result.output and "Traceback" not in result.output
    assert not (tmp_path / "O").exists() and not (tmp_path / "O.onnx").exists()


def test_pretrain_epochs_0_with_from_asks_for_what_from_does_and_passes_the_option_check(tmp_path):
    """The help says 0 is what --from uses; giving it was refused as an option that does nothing."""
    (tmp_path / "M").mkdir()
    result = CliRunner().invoke(main, ["slim", "--from", str(tmp_path / "M"), "--out", str(tmp_path / "O"),
                                       "--pretrain-epochs", "0"])
    assert "--pretrain-epochs" not in result.output and "Traceback" not in result.output
    assert result.exit_code == 2 and "model.json" in result.output  # the empty directory is what is refused
