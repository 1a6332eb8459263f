"""`compress eval`."""

from __future__ import annotations

from pathlib import Path

import click

from compress.cli.options import _data, _emit
from compress.cli.params import DEVICE, GivenPath
from compress.errors import CompressError


@click.command("eval")
@click.argument("model", type=GivenPath(path_type=Path))
@click.option("--data", "data_spec", default="cifar10", show_default=True,
              help="cifar10, cifar100, an ImageFolder dir or a .tar/.tar.gz of one (its test split).")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Use N test images (stratified).")
@click.option("--device", type=DEVICE, default=None, help="cpu, cuda, cuda:1 (default: cuda when available).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def eval_cmd(model, data_spec, test_limit, device, as_json):
    """Accuracy of a model directory or an .onnx file (run in ONNX Runtime) on the test split."""
    if not model.exists():
        raise CompressError(f"model not found: {model}")
    data = _data(data_spec, None, test_limit, 0)
    if model.suffix == ".onnx":
        from compress.onnx_eval import evaluate_onnx, onnx_metadata

        # Images of any size are sized for the file, as for a model directory.
        result = evaluate_onnx(model, data.for_model(onnx_metadata(model)).split("test"))
    else:
        from compress.artifact import META, read_meta
        from compress.stages.finetune import evaluate_model_dir
        from compress.validate import validate_model_meta

        validate_model_meta(read_meta(model), str(model / META))
        result = evaluate_model_dir(model, data, device=device)
    if not result.get("images") or result.get("accuracy") is None:
        raise CompressError(f"nothing was evaluated: the test split of {data_spec} holds no images")
    result = {"model": str(model), "data": data_spec, **result}
    _emit(result, as_json, f"{model}: accuracy {result['accuracy']:.2%} on {result['images']} images")
