"""torch → ONNX with a dynamic batch dimension, BatchNorm kept, metadata attached, checked.

Why the TorchScript exporter (`dynamo=False`) and not torch 2.14's default dynamo exporter:
measured on this toolkit's models, the dynamo path emits opset 18 and down-converts, which
fails on some graphs (mobilenet_v2 stayed at opset 18 without saying so), it folds BatchNorm
into the preceding Conv, and it takes seconds per model. The TorchScript exporter honours
opsets 13-17 exactly. With `TrainingMode.PRESERVE` on a module in eval mode it skips its
eval-only Conv+BN fusion pass, so BatchNormalization nodes stay in the graph: parameter
counts read from the graph then match the module, and ONNX Runtime / TensorRT fuse BN at load.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import onnx

from compress.exporting.errors import ExportError
from compress.exporting.metadata import set_metadata, validate_metadata
from compress.exporting.onnx_file import save_onnx

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
MIN_OPSET, MAX_OPSET = 13, 17


def export_onnx(model, out_path: str | Path, *, input_size, metadata: dict[str, Any], opset: int = 17,
                dynamic_batch: bool = True, batch: int = 1) -> Path:
    """Export `model` (a torch.nn.Module) to `out_path`; returns the path.

    `metadata` holds the keys listed in docs/ARTIFACTS.md (short or `compress.`-prefixed);
    `precision` defaults to fp32. With `dynamic_batch=False` the batch dimension is fixed to `batch`.
    """
    import torch

    from compress.exporting.adaptive_pool import exportable_adaptive_pools

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be an integer in {MIN_OPSET}..{MAX_OPSET}, got {opset!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    input_size = [int(s) for s in input_size]
    meta = {"precision": "fp32", "input_size": input_size, **metadata}
    meta = validate_metadata(meta)
    if list(meta["input_size"]) != input_size:
        raise ValueError(f"metadata input_size {meta['input_size']} disagrees with input_size {input_size}")

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.randn(batch, *input_size, device=device)
    dynamic_axes = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if dynamic_batch else None
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), exportable_adaptive_pools(model, example):
            # The TorchScript exporter announces its deprecation and tracer caveats on every call.
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True,
                              export_params=True)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; one line is enough
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {first[:300]}") from exc
    finally:
        model.train(was_training)

    proto = onnx.load_from_string(buffer.getvalue())
    inline_shared_initializers(proto)
    set_metadata(proto, meta)
    try:
        onnx.checker.check_model(proto)
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"exported graph fails the ONNX checker: {str(exc).strip().splitlines()[0][:300]}") from exc
    _check_io(proto, input_size, dynamic_batch, batch)
    return save_onnx(proto, out_path)


def inline_shared_initializers(model: onnx.ModelProto) -> int:
    """Give every Identity-of-initializer its own initializer; returns how many were replaced.

    The TorchScript exporter stores bit-identical tensors once (freshly initialised BN layers all
    share γ=0.5, β=0, μ=0, σ²=1) and routes the copies through Identity nodes. Counting
    parameters from the graph would then miss them, so each consumer gets its tensor back.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    replaced = 0
    while True:
        inits = {t.name: t for t in graph.initializer}
        victims = [n for n in graph.node if n.op_type == "Identity" and len(n.input) == 1
                   and n.input[0] in inits and n.output[0] not in outputs]
        if not victims:
            return replaced
        for node in victims:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            graph.node.remove(node)
            replaced += 1


def _check_io(model: onnx.ModelProto, input_size: list[int], dynamic_batch: bool, batch: int) -> None:
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise ExportError(f"expected one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got "
                          f"{[i.name for i in inputs]} -> {[o.name for o in graph.output]}")
    dims = inputs[0].type.tensor_type.shape.dim
    first = dims[0].dim_param if dynamic_batch else dims[0].dim_value
    expected = BATCH_DIM if dynamic_batch else batch
    if first != expected or [d.dim_value for d in dims[1:]] != input_size:
        raise ExportError(f"exported input shape is {[d.dim_param or d.dim_value for d in dims]}, "
                          f"expected {[expected, *input_size]}")
