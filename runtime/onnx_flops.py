"""Parameters, MACs and FLOPs read from an ONNX graph itself, for one image.

The rules match `compress.measure.count_params_macs` (and `compress info`), so the numbers of a
model directory and of its exported ONNX agree:

* MACs count Conv (Cout x Cin/groups x kh x kw x Hout x Wout), ConvTranspose, Gemm and MatMul
  (inner dimension x output elements) only; BatchNorm, activations, pooling and Add are excluded.
  FLOPs are stated as exactly 2 x MACs. Their INT8 operator forms (QLinearConv, ConvInteger,
  QLinearMatMul, MatMulInteger) and ONNX Runtime's fused forms (FusedConv, FusedGemm) count as the op
  they compute. Any other op that multiplies by weights (a recurrent cell, attention, a contrib
  convolution) or holds a subgraph is listed as uncounted, so a report shows its MACs as a lower
  bound rather than as a figure; its constant inputs still count as parameters.
* Parameters are the elements of the constant tensors consumed as Conv/ConvTranspose W and B,
  Gemm B and C, a MatMul's constant operand, and BatchNormalization scale and B (not the running
  mean/var, which are buffers in torch). Constants are followed back through DequantizeLinear (INT8
  Q/DQ weights), Cast (FP16 weights), Identity, Reshape, Transpose and Unsqueeze, so INT8 and FP16
  exports count the same parameters as FP32. Each constant counts once even when shared.

Shapes come from ONNX shape inference with a symbolic batch dimension fixed to 1; a graph exported
with a static batch N is inferred as is and its MACs divided by N.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx

from compress.runtime.external_data import load_graph

# Single-input ops a weight may pass through between its initializer and the op that consumes it.
PASS_THROUGH = {"DequantizeLinear", "Cast", "Identity", "Reshape", "Transpose", "Unsqueeze", "Squeeze",
                "CastLike"}
# (op type) -> input positions that hold parameters.
PARAM_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "BatchNormalization": (1, 2),
                "MatMul": (0, 1), "QLinearConv": (3, 8), "ConvInteger": (1,), "FusedConv": (1, 2),
                "FusedGemm": (1, 2), "QLinearMatMul": (0, 3), "MatMulInteger": (0, 1)}
# (op type) -> the input that holds the convolution's weight, or a matrix product's left operand.
CONV_WEIGHT = {"Conv": 1, "QLinearConv": 3, "ConvInteger": 1, "FusedConv": 1}
GEMM_LIKE = ("Gemm", "FusedGemm")
MATMUL_LIKE = ("MatMul", "QLinearMatMul", "MatMulInteger")
COUNTED = (*CONV_WEIGHT, "ConvTranspose", *GEMM_LIKE, *MATMUL_LIKE)
# Op types that multiply by weights but that the rules above cannot size: named as uncounted, never as 0.
_WEIGHTED_WORDS = ("conv", "gemm", "matmul", "attention", "lstm", "gru", "rnn", "einsum")
FLOPS_NOTE = ("FLOPs = 2 x MACs; MACs of Conv, ConvTranspose, Gemm and MatMul (and their INT8 and fused forms) "
              "only (BN, activations, pooling excluded)")


def _not_counted(node) -> bool:
    """An op whose MACs the rules cannot give: one that multiplies by weights, or one with a subgraph."""
    if node.op_type in COUNTED:
        return False
    name = node.op_type.lower()
    return any(word in name for word in _WEIGHTED_WORDS) or any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def count_onnx(model: str | Path | onnx.ModelProto, per_layer: bool = False) -> dict:
    """{'params', 'macs', 'flops', 'batch', 'note'} (and 'layers' with per_layer=True) for one image."""
    if not isinstance(model, onnx.ModelProto):
        model = load_graph(model)
    if not model.graph.node:  # an empty file parses as an empty model: nothing counted is not "0 MACs"
        raise ValueError("the ONNX graph has no nodes")
    counter = _Counter(model)
    return counter.run(per_layer)


class _Counter:
    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        graph = self.model.graph
        self.inits = {t.name: t for t in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.batch = self._fix_batch()
        self.shapes = self._infer_shapes()

    def _fix_batch(self) -> int:
        """Set a symbolic leading dimension of every graph input to 1; returns a static batch (else 1)."""
        static = 1
        for inp in self.model.graph.input:
            if inp.name in self.inits or not inp.type.tensor_type.HasField("shape"):
                continue
            dims = inp.type.tensor_type.shape.dim
            if not dims:
                continue
            if dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                static = max(static, int(dims[0].dim_value))
            else:
                dims[0].ClearField("dim_param")
                dims[0].dim_value = 1
        return static

    def _infer_shapes(self) -> dict[str, list[int | None]]:
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False, data_prop=True)
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"ONNX shape inference failed: {str(exc).strip().splitlines()[0][:200]}") from None
        shapes = _shapes_of(inferred.graph)
        if any(not _known(shapes.get(n.output[0])) for n in self.model.graph.node if n.op_type in COUNTED):
            # ONNX's data propagation stops at shape arithmetic (a `chunk` exported as Shape → Div → Slice,
            # as in YOLO's C2f), leaving every later layer unknown; ONNX Runtime's symbolic inference follows it.
            for name, shape in _symbolic_shapes(self.model).items():
                if not _known(shapes.get(name)):
                    shapes[name] = shape
        for name, init in self.inits.items():
            shapes[name] = list(init.dims)
        return shapes

    def constant(self, name: str, depth: int = 0) -> tuple[str, int] | None:
        """(key, element count) of the constant behind tensor `name`, following pass-through ops."""
        if not name or depth > 8:
            return None
        if name in self.inits:
            return name, int(np.prod(self.inits[name].dims, dtype=np.int64))
        node = self.producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return name, int(np.prod(attr.t.dims, dtype=np.int64))
            return None
        if node.op_type in PASS_THROUGH and node.input:
            return self.constant(node.input[0], depth + 1)
        return None

    def shape(self, name: str) -> list[int | None] | None:
        shape = self.shapes.get(name)
        if shape is None:
            const = self.constant(name)
            if const is not None and const[0] in self.inits:
                return list(self.inits[const[0]].dims)
        return shape

    def run(self, per_layer: bool) -> dict:
        seen: set[str] = set()
        params = 0
        macs = 0
        layers = []
        unknown = []
        for node in self.model.graph.node:
            node_params = 0
            positions = PARAM_INPUTS.get(node.op_type)
            if positions is None and _not_counted(node):
                positions = range(len(node.input))
            for i in positions or ():
                if i < len(node.input):
                    const = self.constant(node.input[i])
                    if const is not None and const[0] not in seen:
                        seen.add(const[0])
                        node_params += const[1]
            params += node_params
            node_macs = self._macs(node)
            if node_macs is None:
                unknown.append(node.name or node.op_type)
                node_macs = 0
            macs += node_macs
            if per_layer and (node_params or node_macs):
                layers.append({"name": node.name, "op": node.op_type, "params": node_params,
                               "macs": node_macs // self.batch})
        if macs % self.batch:
            macs = int(round(macs / self.batch))
        else:
            macs //= self.batch
        out = {"params": int(params), "macs": int(macs), "flops": 2 * int(macs), "batch": 1, "note": FLOPS_NOTE}
        if unknown:
            out["uncounted"] = unknown
        if per_layer:
            out["layers"] = layers
        return out

    def _macs(self, node) -> int | None:
        """MACs of the whole (batch-sized) node: 0 for ops that hold no weights (BN, activations, pooling);
        None when shapes are unknown or the op is one the rules cannot size (then listed as uncounted)."""
        op = node.op_type
        if op not in COUNTED:
            return None if _not_counted(node) else 0
        out_shape = self.shape(node.output[0])
        if op in CONV_WEIGHT:
            w = self.shape(node.input[CONV_WEIGHT[op]]) if len(node.input) > CONV_WEIGHT[op] else None
            if not _known(out_shape) or not _known(w) or len(out_shape) < 3:
                return None
            # Cout x (Cin/g) x k... per output position == out elements x (W elements / Cout).
            return _prod(out_shape) * (_prod(w) // w[0])
        if op == "ConvTranspose":
            x, w = self.shape(node.input[0]), self.shape(node.input[1])
            if not _known(x) or not _known(w):
                return None
            # Each input element is scattered through the Cout/groups x kernel weights of its group.
            return _prod(x) * _prod(w[1:])
        if op in GEMM_LIKE:
            a = self.shape(node.input[0])
            if not _known(out_shape) or not _known(a) or len(a) != 2:
                return None
            k = a[0] if _attr(node, "transA", 0) else a[1]
            return _prod(out_shape) * k
        # MatMul: every output element is one dot product over A's last dimension.
        a = self.shape(node.input[0])
        if not _known(out_shape) or not _known(a) or not a:
            return None
        return _prod(out_shape) * a[-1]


def _shapes_of(graph) -> dict[str, list[int | None]]:
    shapes: dict[str, list[int | None]] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return shapes


def _symbolic_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Shapes from ONNX Runtime's symbolic shape inference, or none when it is absent or fails on the graph
    (the layers it cannot size stay uncounted and are listed as such)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return _shapes_of(SymbolicShapeInference.infer_shapes(model, auto_merge=True).graph)
    except Exception:  # noqa: BLE001 - a third-party inference on a stranger's graph: any failure means "unknown"
        return {}


def _known(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _prod(dims) -> int:
    return int(math.prod(int(d) for d in dims))


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default

