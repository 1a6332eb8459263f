"""`compress info`: size and cost of a model directory, an ONNX file or an architecture name."""

from __future__ import annotations

from pathlib import Path

from compress.errors import CompressError


def describe(target: str, num_classes: int = 10, width: float | None = None) -> dict:
    path = Path(target)
    if path.suffix == ".onnx":
        return _describe_onnx(path)
    if path.is_dir():
        from compress.artifact import read_meta

        meta = read_meta(path)
        return {"name": str(path), "arch": meta["arch"], "params": meta["params"], "macs": meta["macs"],
                "flops": meta["flops"], "accuracy": meta.get("accuracy"), "widths": meta["widths"],
                "input_size": meta["input_size"]}
    if path.exists():
        raise CompressError(f"{path} is neither a model directory nor an .onnx file")
    from compress.measure import count_params_macs, layer_widths
    from models import create_model

    kwargs = {"num_classes": num_classes}
    if width is not None:
        kwargs["width"] = width
    try:
        model = create_model(target, **kwargs)
    except ValueError as exc:
        raise CompressError(str(exc)) from None
    params, macs = count_params_macs(model)
    return {"name": target, "arch": target, "params": params, "macs": macs, "flops": 2 * macs,
            "accuracy": None, "widths": layer_widths(model), "input_size": [3, 32, 32]}


def _describe_onnx(path: Path) -> dict:
    from runtime.onnx_flops import count_onnx

    if not path.is_file():
        raise CompressError(f"ONNX file not found: {path}")
    try:
        counts = count_onnx(path)
    except ValueError as exc:  # an unreadable ONNX file
        raise CompressError(str(exc)) from None
    return {"name": str(path), "arch": None, "params": counts["params"], "macs": counts["macs"],
            "flops": counts["flops"], "accuracy": None, "widths": None}
