"""`compress info`: size and cost of a model directory, an ONNX file or an architecture name.

A file is described only after the checks its loader applies: a model directory is loaded (model.json
validated, weights loaded strictly) and counted from the module itself, and an ONNX file must parse,
pass the ONNX checker and, when it carries `compress.*` metadata, carry valid metadata. No figures are
printed for something that could not be loaded.
"""

from __future__ import annotations

from pathlib import Path

from compress.errors import CompressError


def describe(target: str, num_classes: int | None = None, width: float | None = None, *,
             input_size: int | None = None, arch_kwargs: dict | None = None) -> dict:
    """Counts and widths of a model directory, an .onnx file, or an architecture name (built with
    `num_classes`, 10 by default, `width` and any other constructor `arch_kwargs`, and counted at
    `input_size`×`input_size` pixels, 32 by default; only an architecture name takes these)."""
    path = Path(target)
    given = [name for name, v in (("num_classes", num_classes), ("width", width), ("input_size", input_size),
                                  ("arch_kwargs", arch_kwargs)) if v is not None]
    if (path.suffix == ".onnx" or path.is_dir()) and given:
        # a file or directory holds its own architecture and size: the options would be silently ignored
        flags = ", ".join("--" + g.replace("_", "-") for g in given)
        raise CompressError(f"{target} holds its own architecture: {', '.join(given)} ({flags}) "
                            f"{'is' if len(given) == 1 else 'are'} for an architecture name")
    if path.suffix == ".onnx":
        return _describe_onnx(path)
    if path.is_dir():
        return _describe_model_dir(path)
    if path.exists():
        raise CompressError(f"{path} is neither a model directory nor an .onnx file")
    if "/" in target or "\\" in target:  # no architecture name holds one: a mistyped path
        raise CompressError(f"{target}: no such model directory or .onnx file")
    from compress.data.sizing import check_input_size
    from compress.measure import count_params_macs, layer_widths
    from compress.models import create_model
    from compress.stages.train import model_kwargs

    side = check_input_size(input_size) or 32
    kwargs = dict(arch_kwargs or {})
    for name, value in (("num_classes", num_classes), ("width", width)):
        if value is not None and name in kwargs:
            raise CompressError(f"{name} is given twice, as --{name.replace('_', '-')} and in arch_kwargs")
        if value is not None:
            kwargs[name] = value
    # As `compress train` and `import` build it at this size (a torchvision network's own stem from 64 px).
    kwargs = model_kwargs(target, kwargs, kwargs.get("num_classes", 10), input_size)
    import torch

    from compress.limits import check_allocation

    try:
        # Sized on the meta device first: an absurd --width or --num-classes is refused, not allocated.
        with torch.device("meta"):
            probe = create_model(target, **kwargs)
        check_allocation(sum(p.numel() for p in probe.parameters()), "float32", f"{target} (its weights)")
        model = create_model(target, **kwargs)
    except (ValueError, TypeError) as exc:
        raise CompressError(str(exc).strip().splitlines()[0] if str(exc).strip() else f"cannot build {target}") from None
    params, macs = count_params_macs(model, (3, side, side))
    return {"name": target, "arch": target, "params": params, "macs": macs, "flops": 2 * macs,
            "accuracy": None, "widths": layer_widths(model), "input_size": [3, side, side]}


def load_checked(path: Path):
    """(model, meta) of a model directory after every check: model.json's fields and sizes, then each
    tensor's name, dtype and shape against the module model.json describes (refused, never cast), the
    safetensors header and finite values (compress.weights_file)."""
    from compress.artifact import META, build_model, read_meta, weights_of
    from compress.validate import validate_model_meta
    from compress.weights_file import read_weights

    meta = validate_model_meta(read_meta(path), str(path / META))
    weights = weights_of(path)
    model = build_model(meta, where=str(path / META))
    read_weights(weights, model, where=meta["arch"])
    return model.eval(), meta


def _describe_model_dir(path: Path) -> dict:
    from compress.measure import count_params_macs, layer_widths

    model, meta = load_checked(path)
    params, macs = count_params_macs(model, tuple(meta["input_size"]))
    if params == 0:
        raise CompressError(f"{path} holds a model without parameters")
    return {"name": str(path), "arch": meta["arch"], "params": params, "macs": macs, "flops": 2 * macs,
            "accuracy": meta.get("accuracy"), "widths": layer_widths(model), "input_size": meta["input_size"]}


def _describe_onnx(path: Path) -> dict:
    from compress.exporting.errors import ExportError
    from compress.exporting.metadata import PREFIX, metadata_of, validate_metadata
    from compress.exporting.onnx_file import load_onnx
    from compress.runtime.onnx_flops import count_onnx

    if not path.exists():
        raise CompressError(f"ONNX file not found: {path}")
    try:
        model = load_onnx(path)
        meta = None
        if any(p.key.startswith(PREFIX) for p in model.metadata_props):
            meta = validate_metadata(metadata_of(model), f"{path}: metadata")
        counts = count_onnx(model)
    except ExportError as exc:
        raise CompressError(str(exc)) from None
    except ValueError as exc:  # metadata that can't be right, or a graph the counter cannot read
        text = (str(exc).strip().splitlines() or ["invalid ONNX file"])[0]
        raise CompressError(text if str(path) in text else f"{path}: {text}") from None
    if counts["params"] == 0:
        raise CompressError(f"{path} holds no weights (no parameters in its graph)")
    return {"name": str(path), "arch": meta["arch"] if meta else None, "params": counts["params"],
            "macs": counts["macs"], "flops": counts["flops"], "accuracy": None, "widths": None,
            "input_size": meta["input_size"] if meta else None}
