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
                dynamic_batch: bool = True, batch: int = 1, input_name: str = INPUT_NAME,
                output_names: list[str] | None = None) -> Path:
    """Export `model` (a torch.nn.Module) to `out_path`; returns the path.

    The model takes one N×C×H×W image batch. It may return a tensor (one output, `logits` by default), or
    a tuple, list or dict of tensors, nested (one output each, named as compress.exporting.outputs says,
    or by `output_names`); every output keeps a dynamic batch dimension. Detection heads are exported as
    their inference forward returns them; nothing (no NMS) is added.
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
    _check_name(input_name, "input_name")

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    example = torch.randn(batch, *input_size, device=device)
    names, single = _output_names(model, input_size, device, batch, dynamic_batch, output_names)
    dynamic_axes = {n: {0: BATCH_DIM} for n in [input_name, *names]} if dynamic_batch else None
    exported = model if single else _flat_module(model)
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), exportable_adaptive_pools(model, example):
            # The TorchScript exporter announces its deprecation and tracer caveats on every call.
            warnings.simplefilter("ignore")
            torch.onnx.export(exported, (example,), buffer, dynamo=False, opset_version=opset,
                              input_names=[input_name], output_names=names, dynamic_axes=dynamic_axes,
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
    _check_io(proto, input_size, dynamic_batch, batch, input_name, names)
    return save_onnx(proto, out_path)


def _output_names(model, input_size: list[int], device, batch: int, dynamic_batch: bool,
                  given: list[str] | None) -> tuple[list[str], bool]:
    """The ONNX output names, and whether the model returns a single tensor. One forward in eval mode,
    at batch 2 when the batch is dynamic, shows what the model returns and that every output is batched."""
    import torch

    from compress.exporting.outputs import flatten_outputs

    probe_batch = max(2, batch) if dynamic_batch else batch
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(probe_batch, *input_size, device=device))
    except Exception as exc:  # noqa: BLE001 - a user's forward may raise anything
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"{type(model).__name__} does not run on a {input_size} input: "
                          f"{type(exc).__name__}: {first[:300]}") from None
    finally:
        model.train(was_training)
    try:
        flat = flatten_outputs(out, OUTPUT_NAME)
    except ValueError as exc:
        raise ExportError(f"cannot export {type(model).__name__}: {exc}") from None
    for name, tensor in flat:
        if tensor.dim() == 0 or tensor.shape[0] != probe_batch:
            raise ExportError(f"output {name} has shape {list(tensor.shape)} for a batch of {probe_batch}: every "
                              "output must have the batch as its first dimension")
    names = [name for name, _ in flat]
    if given is not None:
        given = list(given)
        if len(given) != len(names) or len(set(given)) != len(given):
            raise ValueError(f"output_names must give {len(names)} distinct names (the model returns {names}), "
                             f"got {given}")
        for n in given:
            _check_name(n, "output_names")
        names = given
    return names, len(flat) == 1 and not isinstance(out, (tuple, list, dict))


def _check_name(name, what: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 128:
        raise ValueError(f"{what}: an ONNX name must be a non-empty string of at most 128 characters, got {name!r:.40}")


def _flat_module(model):
    import torch

    from compress.exporting.outputs import flatten_outputs

    class Flat(torch.nn.Module):
        """The model with its outputs as one flat tuple, in flatten_outputs' order."""

        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, x):
            return tuple(t for _, t in flatten_outputs(self.model(x)))

    return Flat(model)


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


def _check_io(model: onnx.ModelProto, input_size: list[int], dynamic_batch: bool, batch: int,
              input_name: str = INPUT_NAME, output_names: list[str] | None = None) -> None:
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    outputs = [OUTPUT_NAME] if output_names is None else list(output_names)
    if [i.name for i in inputs] != [input_name] or [o.name for o in graph.output] != outputs:
        raise ExportError(f"expected one input {input_name!r} and the outputs {outputs}, got "
                          f"{[i.name for i in inputs]} -> {[o.name for o in graph.output]}")
    dims = inputs[0].type.tensor_type.shape.dim
    first = dims[0].dim_param if dynamic_batch else dims[0].dim_value
    expected = BATCH_DIM if dynamic_batch else batch
    if first != expected or [d.dim_value for d in dims[1:]] != input_size:
        raise ExportError(f"exported input shape is {[d.dim_param or d.dim_value for d in dims]}, "
                          f"expected {[expected, *input_size]}")
    for out in graph.output:
        out_dims = out.type.tensor_type.shape.dim
        got = (out_dims[0].dim_param if dynamic_batch else out_dims[0].dim_value) if out_dims else None
        if got != expected:
            raise ExportError(f"exported output {out.name} has batch dimension {got!r}, expected {expected!r}")
