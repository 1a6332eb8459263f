"""Will TensorRT build this ONNX graph? A check that needs only onnx, run before any engine build.

Flags operators the ONNX-TensorRT parser lacks, and quantization patterns TensorRT rejects:
non-zero (asymmetric) or unsigned zero points, per-channel scales on activations, operator-style
quantized ops (QLinear*, *Integer), and DequantizeLinear on int32 (quantized bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ERROR, WARNING = "error", "warning"

# ONNX operators the ONNX-TensorRT parser supports in TensorRT 9.2 and later, hence in TensorRT 10.3
# (JetPack 6) and 11.x (onnx/onnx-tensorrt docs/operators.md, support matrix rows marked Y).
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or
Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice
Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Supported only by later 10.x releases (listed for 10.15, absent for 9.2): fine on a desktop GPU
# with a current TensorRT, a build failure on JetPack 6's TensorRT 10.3.
RECENT_OPS = frozenset("""
Attention BlackmanWindow DeformConv Gelu HammingWindow HannWindow Mish RMSNormalization RotaryEmbedding
STFT TensorScatter
""".split())

OPERATOR_QUANTIZED = {
    "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearAveragePool",
    "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
    "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
}
QDQ = ("QuantizeLinear", "DequantizeLinear")
DEFAULT_DOMAINS = ("", "ai.onnx")
# TensorRT's Q/DQ layers quantize to signed types only.
SIGNED_QUANT_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT4,
                      getattr(onnx.TensorProto, "FLOAT8E4M3FN", -1), getattr(onnx.TensorProto, "FLOAT4E2M1", -1)}


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" or "warning"
    node: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.node}: {self.message}"


def check_model(model: onnx.ModelProto) -> list[Finding]:
    """Findings for an ONNX ModelProto, errors first; an empty list means TensorRT-ready."""
    graph = model.graph
    consts = _constant_values(graph)
    const_names = _constant_tensors(graph, set(consts))
    dtypes = _tensor_types(model)
    findings: list[Finding] = []
    for index, node in enumerate(graph.node):
        where = node.name or f"{node.op_type}#{index}"
        findings += _check_op(node, where)
        if node.op_type in QDQ and node.domain in DEFAULT_DOMAINS:
            findings += _check_qdq(node, where, consts, const_names, dtypes)
    findings += _check_inputs(graph)
    return sorted(findings, key=lambda f: f.severity != ERROR)


def check_file(path: str | Path) -> list[Finding]:
    from compress.exporting.onnx_file import load_onnx

    return check_model(load_onnx(path))


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == ERROR]


def _check_op(node: onnx.NodeProto, where: str) -> list[Finding]:
    op = node.op_type
    if node.domain not in DEFAULT_DOMAINS:
        return [Finding(ERROR, where, f"{node.domain}::{op} is outside the ONNX standard domain; "
                                      "TensorRT would need a plugin for it")]
    if op in OPERATOR_QUANTIZED:
        return [Finding(ERROR, where, f"{op} is operator-style quantization, which TensorRT does not parse; "
                                      "quantize in Q/DQ format (QuantizeLinear/DequantizeLinear pairs)")]
    if op in RECENT_OPS:
        return [Finding(WARNING, where, f"{op} is supported only by TensorRT releases newer than 10.3 "
                                        "(JetPack 6)")]
    if op not in SUPPORTED_OPS:
        return [Finding(ERROR, where, f"{op} is not supported by the ONNX-TensorRT parser")]
    return []


def _check_qdq(node, where, consts, const_names, dtypes) -> list[Finding]:
    found: list[Finding] = []
    x = node.input[0]
    scale_name = node.input[1] if len(node.input) > 1 else ""
    zp_name = node.input[2] if len(node.input) > 2 else ""
    if node.op_type == "DequantizeLinear" and dtypes.get(x) == onnx.TensorProto.INT32:
        found.append(Finding(ERROR, where, f"DequantizeLinear of int32 tensor {x!r} (quantized bias): TensorRT "
                                           "dequantizes only 8-bit and narrower types; keep biases in float"))
    scale = consts.get(scale_name)
    if scale is None:
        found.append(Finding(ERROR, where, f"scale {scale_name!r} is not a build-time constant"))
    else:
        if scale.size > 1 and x not in const_names:
            found.append(Finding(ERROR, where, f"per-channel scale ({scale.size} values) on activation {x!r}: "
                                               "TensorRT supports per-tensor scales on activations only"))
        if not np.all(np.asarray(scale, dtype=np.float64) > 0):
            found.append(Finding(ERROR, where, f"scale {scale_name!r} has values that are not positive"))
    if zp_name:
        zp = consts.get(zp_name)
        zp_type = dtypes.get(zp_name)
        if zp is None:
            found.append(Finding(ERROR, where, f"zero point {zp_name!r} is not a build-time constant"))
        elif np.any(np.asarray(zp, dtype=np.float64) != 0):
            found.append(Finding(ERROR, where, f"non-zero zero point in {zp_name!r} (asymmetric quantization): "
                                               "TensorRT supports symmetric quantization only"))
        if zp_type is not None and zp_type not in SIGNED_QUANT_TYPES:
            found.append(Finding(ERROR, where, f"zero point {zp_name!r} is {onnx.TensorProto.DataType.Name(zp_type)}; "
                                               "TensorRT quantizes to signed INT8 (use QInt8, not QUInt8)"))
    return found


def _check_inputs(graph: onnx.GraphProto) -> list[Finding]:
    inits = {t.name for t in graph.initializer}
    found = []
    for inp in graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if i > 0 and not d.HasField("dim_value")]
        if dynamic:
            found.append(Finding(WARNING, f"input {inp.name}", f"dimensions {dynamic} besides the batch are "
                                                               "dynamic; the engine profile fixes only the batch"))
    return found


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _constant_tensors(graph: onnx.GraphProto, known: set[str]) -> set[str]:
    """Tensors computable at build time: constants and everything computed only from constants."""
    names = set(known)
    for node in graph.node:  # ONNX requires topological order
        inputs = [i for i in node.input if i]
        if inputs and all(i in names for i in inputs):
            names.update(o for o in node.output if o)
    return names


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {t.name: t.data_type for t in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - a graph shape inference cannot follow still gets the other checks
        inferred = model
    g = inferred.graph
    for info in list(g.value_info) + list(g.input) + list(g.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types.setdefault(info.name, info.type.tensor_type.elem_type)
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types.setdefault(node.output[0], attr.t.data_type)
    return types
