"""TensorRT readiness without TensorRT: each planted defect is found at its node, and clean
FP32 and symmetric Q/DQ graphs pass."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.exporting.trt_readiness import ERROR, WARNING, check_model, errors


def _graph(nodes, inits, opset=13, out_shape=None):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model


def _qdq_conv(act_scale=np.float32(0.05), act_zp=np.int8(0), w_dtype=np.int8, extra_nodes=(), extra_inits=None):
    """x → Q → DQ → Conv(DQ(int8 weights, per-channel scale)) → y: symmetric INT8 in Q/DQ format."""
    inits = {
        "s_x": act_scale, "zp_x": act_zp,
        "w_q": np.ones((4, 3, 3, 3), w_dtype), "s_w": np.full(4, 0.01, np.float32), "zp_w": np.zeros(4, w_dtype),
    }
    inits.update(extra_inits or {})
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_x", "zp_x"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s_x", "zp_x"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "s_w", "zp_w"], ["w"], name="dq_w", axis=0),
        helper.make_node("Conv", ["xd", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
        *extra_nodes,
    ]
    return _graph(nodes, inits, out_shape=["batch", 4, 8, 8])


def _only_error(findings, node, text):
    bad = errors(findings)
    assert len(bad) == 1, findings
    assert bad[0].node == node and text in bad[0].message
    return bad[0]


def test_exported_fp32_model_is_clean(vgg_onnx):
    _, path = vgg_onnx
    assert check_model(onnx.load(str(path))) == []


def test_symmetric_qdq_with_per_channel_weights_is_clean():
    model = _qdq_conv()
    onnx.checker.check_model(model)
    assert check_model(model) == []


def test_unsupported_and_foreign_ops():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="ok"),
             helper.make_node("Unique", ["r"], ["u"], name="uniq"),
             helper.make_node("FusedConv", ["u"], ["y"], name="ms", domain="com.microsoft")]
    findings = check_model(_graph(nodes, {}))
    assert {(f.node, f.severity) for f in findings} == {("uniq", ERROR), ("ms", ERROR)}
    assert any("Unique is not supported" in f.message for f in findings)
    assert any("plugin" in f.message for f in findings)


def test_op_newer_than_jetpack6_is_a_warning_only():
    model = _graph([helper.make_node("Gelu", ["x"], ["y"], name="gelu")], {}, opset=20)
    findings = check_model(model)
    assert [(f.severity, f.node) for f in findings] == [(WARNING, "gelu")]


def test_asymmetric_zero_point():
    findings = errors(check_model(_qdq_conv(act_zp=np.int8(3))))
    assert {f.node for f in findings} == {"q_in", "dq_in"}  # both read the same zero point
    assert all("non-zero zero point" in f.message for f in findings)


def test_unsigned_zero_point():
    findings = check_model(_qdq_conv(act_zp=np.uint8(0)))
    assert {f.node for f in errors(findings)} == {"q_in", "dq_in"}
    assert all("signed INT8" in f.message for f in errors(findings))


def test_per_channel_scale_on_an_activation():
    model = _qdq_conv(act_scale=np.full(3, 0.05, np.float32), act_zp=np.zeros(3, np.int8))
    for node in model.graph.node[:2]:
        node.attribute.append(helper.make_attribute("axis", 1))
    findings = errors(check_model(model))
    assert {f.node for f in findings} == {"q_in", "dq_in"}
    assert all("per-channel scale" in f.message for f in findings)


def test_qlinear_operator_quantization():
    nodes = [helper.make_node("QLinearConv", ["x", "s", "z", "w", "s", "z", "s", "z"], ["y"], name="qconv")]
    inits = {"s": np.float32(0.1), "z": np.uint8(0), "w": np.ones((4, 3, 3, 3), np.uint8)}
    _only_error(check_model(_graph(nodes, inits)), "qconv", "Q/DQ format")


def test_int32_bias_dequantization():
    extra = [helper.make_node("DequantizeLinear", ["b_q", "s_b"], ["b"], name="dq_bias")]
    model = _qdq_conv(extra_nodes=extra, extra_inits={"b_q": np.zeros(4, np.int32), "s_b": np.float32(5e-4)})
    _only_error(check_model(model), "dq_bias", "int32")


def test_non_constant_scale_and_non_positive_scale():
    model = _qdq_conv(act_scale=np.float32(0.0))
    assert {f.node for f in errors(check_model(model))} == {"q_in", "dq_in"}
    nodes = [helper.make_node("Abs", ["x"], ["s_dyn"], name="abs"),
             helper.make_node("QuantizeLinear", ["x", "s_dyn"], ["y"], name="q_dyn")]
    _only_error(check_model(_graph(nodes, {})), "q_dyn", "not a build-time constant")


def test_unnamed_nodes_are_identified_by_type_and_index():
    model = _graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Unique", ["r"], ["y"])], {})
    assert [f.node for f in check_model(model)] == ["Unique#1"]


def test_errors_are_listed_before_warnings():
    nodes = [helper.make_node("Gelu", ["x"], ["g"], name="gelu"),
             helper.make_node("Unique", ["g"], ["y"], name="uniq")]
    severities = [f.severity for f in check_model(_graph(nodes, {}, opset=20))]
    assert severities == [ERROR, WARNING]
