"""Small ONNX graphs built with onnx.helper (no torch), with hand-computable sizes and costs."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = [f"c{i}" for i in range(10)]
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes, inits, inp, out, meta: bool = True, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if meta:
        props = {"compress.classes": json.dumps(CLASSES), "compress.mean": json.dumps(MEAN),
                 "compress.std": json.dumps(STD), "compress.input_size": json.dumps([3, 8, 8]),
                 "compress.arch": "tiny", "compress.precision": "fp32", "compress.source_sha256": "0" * 64,
                 "compress.toolkit_version": "0.1.0"}
        for k, v in props.items():
            model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    return model


def tiny_cnn(batch="batch", seed: int = 0) -> onnx.ModelProto:
    """3x8x8 → Conv 3→4 (3x3, pad 1, bias) → BN → ReLU → GAP → Flatten → Gemm 4→10.

    params: conv 4*3*9 + 4 = 112, BN γ+β 8, Gemm 40 + 10 = 50 → 170.
    MACs: conv 4*3*9*8*8 = 6912, Gemm 40 → 6952.
    """
    rng = np.random.default_rng(seed)
    f32 = np.float32
    inits = [_init("w", rng.standard_normal((4, 3, 3, 3)).astype(f32)), _init("b", rng.standard_normal(4).astype(f32)),
             _init("gamma", (rng.random(4) + 0.5).astype(f32)), _init("beta", rng.standard_normal(4).astype(f32)),
             _init("mean", (rng.standard_normal(4) * 0.1).astype(f32)), _init("var", (rng.random(4) + 0.5).astype(f32)),
             _init("fc_w", (rng.standard_normal((10, 4)) * 2).astype(f32)), _init("fc_b", rng.standard_normal(10).astype(f32))]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])
    return _model(nodes, inits, inp, out)


def grouped_convs() -> onnx.ModelProto:
    """8x16x16 → depthwise 3x3 (groups 8, no bias) → grouped 3x3 stride 2 (8→16, groups 2, bias) → 1x1 16→32.

    MACs = Cout × Cin/groups × kh × kw × Hout × Wout:
      8*1*3*3*16*16 = 18432;  16*4*3*3*8*8 = 36864;  32*16*1*1*8*8 = 32768  → 88064.
    params: 8*1*9 = 72;  16*4*9 + 16 = 592;  32*16 = 512  → 1176.
    """
    f32 = np.float32
    inits = [_init("dw", np.ones((8, 1, 3, 3), f32)), _init("gw", np.ones((16, 4, 3, 3), f32)),
             _init("gb", np.zeros(16, f32)), _init("pw", np.ones((32, 16, 1, 1), f32))]
    nodes = [helper.make_node("Conv", ["input", "dw"], ["a"], group=8, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "gw", "gb"], ["b"], group=2, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Conv", ["b", "pw"], ["logits"], kernel_shape=[1, 1])]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 8, 16, 16])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 32, 8, 8])
    return _model(nodes, inits, inp, out, meta=False)


def chunk_by_shape_arithmetic() -> onnx.ModelProto:
    """4x8x8 → Conv 1x1 4→8 → the first half of its channels, the half computed as torch exports `chunk`
    (Shape → Gather → Add → Div → Slice) → Conv 3x3 pad 1 4→4.

    MACs: 8*4*8*8 = 2048; 4*4*9*8*8 = 9216 → 11264. params: 32 + 144 = 176.
    """
    f32 = np.float32
    rng = np.random.default_rng(0)
    inits = [_init("w1", rng.standard_normal((8, 4, 1, 1)).astype(f32)),
             _init("w2", rng.standard_normal((4, 4, 3, 3)).astype(f32)),
             _init("axis_c", np.array([1], np.int64)), _init("one", np.array([1], np.int64)),
             _init("two", np.array([2], np.int64)), _init("zero", np.array([0], np.int64))]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], kernel_shape=[1, 1]),
             helper.make_node("Shape", ["c1"], ["s"]),
             helper.make_node("Gather", ["s", "axis_c"], ["c"]),
             helper.make_node("Add", ["c", "one"], ["c_plus"]),
             helper.make_node("Div", ["c_plus", "two"], ["half"]),
             helper.make_node("Slice", ["c1", "zero", "half", "axis_c"], ["first"]),
             helper.make_node("Conv", ["first", "w2"], ["output"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4, 8, 8])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4, 8, 8])
    return _model(nodes, inits, inp, out)


def quantized_and_half() -> onnx.ModelProto:
    """Conv with INT8 weights and INT32 bias behind DequantizeLinear, then Gemm with FP16 weights behind Cast.

    params: 4*3*3*3 + 4 = 112 (scales and zero points excluded) + 10*4 + 10 = 50 → 162.
    MACs: 4*3*9*8*8 = 6912 + 40 → 6952.
    """
    inits = [_init("wq", np.ones((4, 3, 3, 3), np.int8)), _init("w_scale", np.full(4, 0.01, np.float32)),
             _init("w_zero", np.zeros(4, np.int8)), _init("bq", np.ones(4, np.int32)),
             _init("b_scale", np.full(4, 1e-4, np.float32)), _init("b_zero", np.zeros(4, np.int32)),
             _init("fc_w16", np.ones((10, 4), np.float16)), _init("fc_b16", np.zeros(10, np.float16))]
    nodes = [helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["w"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "b_scale", "b_zero"], ["b"], axis=0),
             helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Cast", ["fc_w16"], ["fc_w"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["fc_b16"], ["fc_b"], to=TensorProto.FLOAT),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    return _model(nodes, inits, inp, out, meta=False)


def matmul_head() -> onnx.ModelProto:
    """input N×6 → MatMul W 6×5 → Add bias: MACs 30, params 30 (an Add's constant is not a parameter)."""
    inits = [_init("W", np.ones((6, 5), np.float32)), _init("bias", np.zeros(5, np.float32))]
    nodes = [helper.make_node("MatMul", ["input", "W"], ["m"]), helper.make_node("Add", ["m", "bias"], ["logits"])]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 6])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])
    return _model(nodes, inits, inp, out, meta=False)


def reference_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """tiny_cnn's output computed in numpy, independent of ONNX Runtime."""
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    n, _, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((n, 4, h, wd), np.float64)
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", padded[:, :, i:i + h, j:j + wd], w["w"][:, :, i, j])
    conv += w["b"].reshape(1, -1, 1, 1)
    bn = (conv - w["mean"].reshape(1, -1, 1, 1)) / np.sqrt(w["var"].reshape(1, -1, 1, 1) + 1e-5)
    bn = bn * w["gamma"].reshape(1, -1, 1, 1) + w["beta"].reshape(1, -1, 1, 1)
    pooled = np.maximum(bn, 0).mean(axis=(2, 3))
    return pooled @ w["fc_w"].T + w["fc_b"]


def detector_like(input_name: str = "images", batch="N", dict_order=("boxes", "scores")) -> onnx.ModelProto:
    """A two-output graph the way a detector exports: images 3x8x8 → Conv 3→4 (3x3, pad 1) → ReLU gives
    `boxes` (N×4×8×8); GAP → Flatten → Gemm 4→10 gives `scores` (N×10). Outputs in `dict_order`.

    MACs: conv 4*3*9*8*8 = 6912, Gemm 40 → 6952; params 108 + 40 = 148.
    """
    rng = np.random.default_rng(3)
    inits = [_init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             _init("fc", rng.standard_normal((10, 4)).astype(np.float32))]
    nodes = [helper.make_node("Conv", [input_name, "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["boxes"]),
             helper.make_node("GlobalAveragePool", ["boxes"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["scores"], transB=1)]
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, 8, 8])
    outs = {"boxes": helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, 4, 8, 8]),
            "scores": helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 10])}
    graph = helper.make_graph(nodes, "detector", [inp], [outs[k] for k in dict_order], initializer=inits)
    return _with_meta(graph)


def _with_meta(graph, classes=CLASSES) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in {"compress.classes": json.dumps(classes), "compress.mean": json.dumps(MEAN),
                 "compress.std": json.dumps(STD), "compress.input_size": json.dumps([3, 8, 8]),
                 "compress.precision": "fp32"}.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    return model


def renamed_classifier(input_name: str = "pixel_values", output_name: str = "probs") -> onnx.ModelProto:
    """tiny_cnn with other input and output names: a classifier is known by its output, not by its names."""
    model = tiny_cnn()
    for node in model.graph.node:
        node.input[:] = [input_name if n == "input" else n for n in node.input]
        node.output[:] = [output_name if n == "logits" else n for n in node.output]
    model.graph.input[0].name = input_name
    model.graph.output[0].name = output_name
    onnx.checker.check_model(model)
    return model


def probabilities_and_logits(first: str = "softmax", temperature: float = 1.0) -> onnx.ModelProto:
    """tiny_cnn with two outputs, as an ultralytics classifier exports: `probs` (N×10, Softmax of the logits
    over axis 1, or `first`="identity" for the logits again) then `logits`; `temperature` divides the logits
    before the Softmax."""
    model = tiny_cnn()
    graph = model.graph
    graph.initializer.append(_init("t", np.array([temperature], np.float32)))
    graph.node.append(helper.make_node("Div", ["logits", "t"], ["scaled"]))
    graph.node.append(helper.make_node("Softmax", ["scaled"], ["probs"], axis=1) if first == "softmax"
                      else helper.make_node("Identity", ["scaled"], ["probs"]))
    logits = graph.output[0]
    graph.output.insert(0, helper.make_tensor_value_info("probs", TensorProto.FLOAT, list(_dims(logits))))
    onnx.checker.check_model(model)
    return model


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def with_nonfinite_weights(model: onnx.ModelProto, name: str = "fc_w", value: float = float("nan")) -> onnx.ModelProto:
    """A copy of `model` whose initializer `name` is all `value` (NaN by default): a broken network."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, t in enumerate(out.graph.initializer):
        if t.name == name:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full(tuple(t.dims), value, np.float32), name))
    return out


def with_metadata(model: onnx.ModelProto, **props: str) -> onnx.ModelProto:
    """A copy of `model` with `compress.KEY` metadata properties set to the raw strings given."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    held = {p.key: p.value for p in out.metadata_props}
    held.update({f"compress.{k}": v for k, v in props.items()})
    del out.metadata_props[:]
    for k, v in held.items():
        out.metadata_props.add(key=k, value=v)
    return out


def first_image_only(batch="batch") -> onnx.ModelProto:
    """tiny_cnn behind a Slice that keeps input[0:1]: one answer, [1, 10], whatever the batch."""
    model = tiny_cnn(batch)
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["first" if name == "input" else name for name in node.input]
    graph.initializer.extend([_init("s_start", np.array([0], np.int64)), _init("s_end", np.array([1], np.int64)),
                              _init("s_axis", np.array([0], np.int64))])
    graph.node.insert(0, helper.make_node("Slice", ["input", "s_start", "s_end", "s_axis"], ["first"]))
    graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.checker.check_model(model)
    return model
