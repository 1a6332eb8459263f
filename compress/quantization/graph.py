"""What the toolkit reads from and checks in ONNX graphs around quantization: the source's metadata and
single input, the structure ONNX Runtime's quantizer needs (standard operators, no cycles, finite
weights), and the Q/DQ rules TensorRT's explicit quantization sets on the result."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from compress.errors import CompressError
from compress.limits import MAX_CHANNELS

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
META_PREFIX = "compress."
PRECISION_KEY = "compress.precision"
# Operator domains ONNX Runtime has kernels for; anything else needs a custom-op library we never load.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
FLOAT_TYPES = (1, 10, 11, 16)  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


def onnx_metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _metadata_json(model, path, key: str):
    """A compress.* metadata value parsed as strict, bounded JSON (compress.limits.parse_json): a crafted
    value nested 100k deep or holding NaN is refused in one line."""
    from compress.limits import parse_json

    props = onnx_metadata(model)
    if META_PREFIX + key not in props:
        return None
    return parse_json(props[META_PREFIX + key], f"{path}: the {META_PREFIX}{key} metadata")


def normalization_of(model, path) -> tuple[list[float], list[float]]:
    """The per-channel mean and std of [0, 1] pixels the network was trained with (finite, std > 0)."""
    values = {}
    for key in ("mean", "std"):
        value = _metadata_json(model, path, key)
        if value is None:
            raise CompressError(f"{path} lacks the {META_PREFIX}{key} metadata; export it with `compress export`")
        if (not isinstance(value, list) or not value or len(value) > MAX_CHANNELS
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
                or (key == "std" and min(value) <= 0)):
            raise CompressError(f"{path}: the {META_PREFIX}{key} metadata must be a list of at most {MAX_CHANNELS} "
                                f"finite numbers{' > 0' if key == 'std' else ''}, got {str(value)[:80]}")
        values[key] = [float(v) for v in value]
    return values["mean"], values["std"]


def classes_of(model, path) -> list[str] | None:
    """The class names in the compress.classes metadata (None when the file has none)."""
    classes = _metadata_json(model, path, "classes")
    if classes is None:
        return None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise CompressError(f"{path}: the {META_PREFIX}classes metadata must be a list of names, "
                            f"got {str(classes)[:80]}")
    return classes


def input_info(model) -> tuple[str, int | None, list[int]]:
    """(input name, fixed batch size or None, [C, H, W]) of the graph's single data input."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise CompressError(f"expected one graph input, found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return inputs[0].name, batch, [d.dim_value for d in dims[1:]]


def image_size(model, path) -> list[int]:
    """[C, H, W] the graph takes: its input's fixed dimensions, or where those are dynamic, the size its
    compress.input_size metadata names (refused in one line when it names none or another channel count)."""
    _, _, size = input_info(model)
    if len(size) == 3 and all(size):
        return size
    declared = _metadata_json(model, path, "input_size")
    if not (isinstance(declared, list) and len(declared) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in declared)
            and all(d in (0, want) for d, want in zip(size, declared))):
        raise CompressError(f"{path}: the graph's input is {['N', *[d or '?' for d in size]]} (dynamic) and no "
                            "compress.input_size metadata names an image size it takes to calibrate and evaluate at; "
                            "export it with a fixed size or with the metadata")
    return declared


# --- what the quantizer needs of its source -------------------------------------------------------------

def check_quantizable(model, where) -> None:
    """Refuse, in one line, what ONNX Runtime's quantizer would fail on with a traceback (or quantize into
    garbage): an operator of a custom domain, a cycle, a weight holding NaN or infinity."""
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if node.domain not in KNOWN_DOMAINS and (node.domain, node.op_type) not in local:
            raise CompressError(f"{where}: node {node.name or node.op_type} is {node.domain}:{node.op_type}, an "
                                "operator of a custom domain that ONNX Runtime has no kernel for; quantize a graph "
                                "of standard ONNX operators")
    looped = node_in_cycle(model.graph)
    if looped is not None:
        raise CompressError(f"{where}: the graph has a cycle through node {looped}; an ONNX graph must be acyclic")
    check_finite_initializers(model.graph, where)


def node_in_cycle(graph) -> str | None:
    """The name of a node on a cycle of `graph` (Kahn's algorithm: what cannot be ordered), or None."""
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    users = defaultdict(list)
    waiting = []
    for i, n in enumerate(nodes):
        deps = {producer[x] for x in n.input if x in producer}
        waiting.append(len(deps))
        for j in deps:
            users[j].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    while ready:
        for j in users[ready.pop()]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    stuck = [i for i, w in enumerate(waiting) if w > 0]
    return (nodes[stuck[0]].name or nodes[stuck[0]].op_type) if stuck else None


def check_finite_initializers(graph, where) -> None:
    """NaN or infinity in a float weight would quantize to garbage (ONNX Runtime's calibrator asserts on
    it): refused, naming the first such initializer."""
    from onnx import TensorProto, numpy_helper

    for init in graph.initializer:
        if init.data_type not in FLOAT_TYPES or init.data_location == TensorProto.EXTERNAL:
            continue
        values = numpy_helper.to_array(init)
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise CompressError(f"{where}: weight {init.name} holds NaN or infinity ({bad:,} of {values.size:,} "
                                "values); non-finite weights cannot be quantized")


# --- structure checks ----------------------------------------------------------------------------------

def weight_nodes(model) -> list:
    """Conv/Gemm/MatMul nodes whose weight is an initializer: the layers a user can keep in float."""
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits]


def int8_weight_layers(model) -> list:
    """Conv/Gemm/MatMul nodes of a quantized graph whose weight input comes out of a DequantizeLinear: the
    layers that do run on int8 weights, read from the graph rather than inferred from what was asked."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n for n in model.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in dequantized]


def _out_channel_axis(node, weight_rank: int) -> int:
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "MatMul":
        return weight_rank - 1
    if node.op_type == "ConvTranspose":
        return 1
    return 0


def qdq_problems(model) -> list[str]:
    """What in a quantized graph breaks the rules TensorRT's explicit quantization sets (see module doc).

    An empty list means: QDQ only, int8 zero points all 0, per-tensor activation scales, per-channel
    weight scales on the output-channel axis, no int32 DequantizeLinear.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    problems = []
    for n in graph.node:
        where = n.name or n.op_type
        if n.op_type.startswith("QLinear") or n.op_type.endswith("Integer"):
            problems.append(f"{where}: operator-style quantized op {n.op_type}")
            continue
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if n.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: {n.op_type} in domain {n.domain!r}, not the ONNX standard one")
        if len(n.input) < 3 or n.input[2] not in inits:
            problems.append(f"{where}: no constant zero point")
            continue
        zp = inits[n.input[2]]
        if zp.data_type != TensorProto.INT8:
            problems.append(f"{where}: zero point type {TensorProto.DataType.Name(zp.data_type)}, expected INT8")
        if np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{where}: non-zero zero point (asymmetric)")
        scale = numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits else None
        if scale is None:
            problems.append(f"{where}: scale is not a constant")
            continue
        x = n.input[0]
        if n.op_type == "DequantizeLinear" and x in inits:
            w = inits[x]
            if w.data_type != TensorProto.INT8:
                problems.append(f"{where}: DequantizeLinear of {TensorProto.DataType.Name(w.data_type)} "
                                f"tensor {x} (int8 expected; int32 would be a quantized bias)")
                continue
            users = [u for u in consumers.get(n.output[0], []) if u.op_type in WEIGHT_OPS]
            if not users:
                continue
            axis_attr = next((a.i for a in n.attribute if a.name == "axis"), 1)
            axis = _out_channel_axis(users[0], len(w.dims))
            channels = w.dims[axis]
            if scale.ndim != 1 or scale.size != channels or axis_attr % len(w.dims) != axis:
                if channels > 1:
                    problems.append(f"{where}: weight scale shape {list(scale.shape)} on axis {axis_attr}, "
                                    f"expected per-channel [{channels}] on axis {axis}")
        elif scale.size != 1:
            problems.append(f"{where}: activation {x} has {scale.size} scales, expected one per tensor")
    return problems


def trt_findings(model) -> tuple[list[str], list[str], str]:
    """(errors, warnings, checker name) from export.trt_readiness when present, else from qdq_problems."""
    try:
        from compress.exporting.trt_readiness import check_model
    except ImportError:
        return qdq_problems(model), [], "compress.quantization.qdq_problems"
    findings = check_model(model)
    errs = [str(f) for f in findings if getattr(f, "severity", "error") == "error"]
    warns = [str(f) for f in findings if getattr(f, "severity", "error") != "error"]
    return errs + qdq_problems(model), warns, "compress.exporting.trt_readiness + compress.quantization.qdq_problems"


def resolve_layers(model, names) -> list[str]:
    """Map user-given layer names onto weight-node names: an exact node name, a module path that
    appears in the node name (`features.0` in `/features/features.0/Conv`), or a weight initializer
    name (`classifier.weight`) or its module prefix."""
    nodes = weight_nodes(model)
    resolved = []
    for name in names:
        hits = [n.name for n in nodes if n.name == name]
        if not hits:
            hits = [n.name for n in nodes if name in n.name.split("/")]
        if not hits:
            hits = [n.name for n in nodes if n.input[1] == name or n.input[1] == f"{name}.weight"]
        if len(hits) != 1:
            listing = ", ".join(n.name for n in nodes)
            what = "matches several layers" if hits else "matches no Conv/Gemm/MatMul layer"
            raise CompressError(f"--exclude {name!r} {what}; layers are: {listing}")
        resolved.append(hits[0])
    return list(dict.fromkeys(resolved))


def check_classifier_outputs(model, path) -> None:
    """Refuse, before calibration, a graph whose outputs are not a classifier's: quantize measures the INT8
    file's accuracy on labelled images, and a detector or a segmenter used to be calibrated and quantized
    before that step refused it and threw the file away."""
    from compress.runtime.accuracy import classifier_problem

    shapes = [tuple(d.dim_value if d.dim_value > 0 else -1 for d in o.type.tensor_type.shape.dim)
              for o in model.graph.output]
    last = shapes[-1] if shapes else ()
    problem = classifier_problem(shapes, last[1] if len(last) == 2 else 0)  # the class count is the data's to check
    if problem is not None:
        raise CompressError(f"{path}: {problem}; quantize measures INT8 accuracy on labelled images and makes no "
                            "file for detectors or segmenters")
