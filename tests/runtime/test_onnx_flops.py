"""Parameters and MACs read from ONNX graphs, against hand-computed values and the torch counter."""

import numpy as np
import onnx
import pytest
from onnx_builders import chunk_by_shape_arithmetic, grouped_convs, matmul_head, quantized_and_half, tiny_cnn

from compress.runtime.onnx_flops import count_onnx

VGG19_PARAMS = 20_035_018  # conv + BN γ/β + linear, BN kept in the graph by the exporter
VGG19_MACS = 398_136_320


def test_vgg19_cifar_matches_the_paper_model(vgg19_onnx):
    counts = count_onnx(vgg19_onnx)
    assert counts["params"] == VGG19_PARAMS
    assert counts["macs"] == VGG19_MACS
    assert counts["flops"] == 2 * VGG19_MACS
    assert "uncounted" not in counts


def test_vgg19_per_layer_sums_to_total(vgg19_onnx):
    counts = count_onnx(vgg19_onnx, per_layer=True)
    convs = [layer for layer in counts["layers"] if layer["op"] == "Conv"]
    assert len(convs) == 16
    # first layer: 64 x 3 x 3 x 3 x 32 x 32
    assert convs[0]["macs"] == 64 * 3 * 9 * 32 * 32
    assert sum(layer["macs"] for layer in counts["layers"]) == VGG19_MACS
    assert sum(layer["params"] for layer in counts["layers"]) == VGG19_PARAMS


def test_tiny_cnn_counts_bn_affine_but_not_running_stats():
    counts = count_onnx(tiny_cnn())
    assert counts["params"] == 170
    assert counts["macs"] == 6952


def test_grouped_and_depthwise_convs():
    counts = count_onnx(grouped_convs())
    assert counts["macs"] == 8 * 1 * 9 * 16 * 16 + 16 * 4 * 9 * 8 * 8 + 32 * 16 * 8 * 8 == 88064
    assert counts["params"] == 72 + 592 + 512


def test_int8_and_fp16_weights_are_followed_to_their_consumers():
    counts = count_onnx(quantized_and_half())
    assert counts["params"] == 112 + 50
    assert counts["macs"] == 6952


def test_matmul_counts_its_constant_operand():
    counts = count_onnx(matmul_head())
    assert counts["macs"] == 30 and counts["params"] == 30


def test_static_batch_is_divided_out():
    assert count_onnx(tiny_cnn(batch=4))["macs"] == count_onnx(tiny_cnn())["macs"]


def test_shared_initializer_counts_once():
    model = tiny_cnn()
    # A second Gemm reading the same weights adds MACs but no parameters.
    extra = onnx.helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits2"], transB=1)
    model.graph.node.append(extra)
    model.graph.output.append(onnx.helper.make_tensor_value_info("logits2", onnx.TensorProto.FLOAT, ["batch", 10]))
    counts = count_onnx(model)
    assert counts["params"] == 170 and counts["macs"] == 6952 + 40


@pytest.mark.parametrize("arch,kwargs", [("preresnet20", {"width": 0.25}), ("mobilenet_v2", {"width_mult": 0.25}),
                                         ("densenet16", {"width": 0.5})])
def test_agrees_with_the_torch_counter(tmp_path, arch, kwargs):
    from compress.measure import count_params_macs
    from compress.exporting.onnx_export import export_onnx
    from compress.models import create_model
    from onnx_builders import CLASSES

    model = create_model(arch, num_classes=10, **kwargs)
    meta = {"classes": CLASSES, "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [3, 32, 32], "arch": arch,
            "precision": "fp32", "source_sha256": "0" * 64, "toolkit_version": "0.1.0"}
    path = export_onnx(model, tmp_path / "m.onnx", input_size=[3, 32, 32], metadata=meta)
    counts = count_onnx(path)
    assert (counts["params"], counts["macs"]) == count_params_macs(model)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        count_onnx(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="not a readable ONNX"):
        count_onnx(bad)


def test_channels_sized_by_shape_arithmetic_are_counted():
    """YOLO's C2f exports `chunk` as Shape → Div → Slice: ONNX's own inference loses every later shape
    (a YOLOv8n counted 188M of its 4.37G MACs); ONNX Runtime's symbolic inference sizes them."""
    counts = count_onnx(chunk_by_shape_arithmetic())
    assert "uncounted" not in counts
    assert counts["macs"] == 11264 and counts["params"] == 176


def _graph(nodes, inits, x_shape, x_type=onnx.TensorProto.FLOAT, y_type=onnx.TensorProto.FLOAT):
    from onnx import helper, numpy_helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type, x_shape)],
                              [helper.make_tensor_value_info("y", y_type, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _q(name):
    return {f"{name}_s": np.float32(0.1), f"{name}_z": np.uint8(128)}


CONV_MACS, CONV_PARAMS = 16 * 3 * 9 * 32 * 32, 16 * 3 * 9  # 16 x 3 x 3 x 3 over 3 x 32 x 32, padded


@pytest.mark.parametrize("form", ["QLinearConv", "ConvInteger"])
def test_int8_operator_convolutions_count_as_the_convolution(form):
    """A stranger's INT8 file in operator form (not the Q/DQ form our quantizer writes) used to count 0 MACs
    and 0 params, which a report showed as ×0.000 and `compress info` as a file with no weights."""
    from onnx import helper

    w = np.ones((16, 3, 3, 3), np.uint8)
    if form == "QLinearConv":
        inits = {**_q("x"), "w": w, **_q("w"), **_q("y")}
        node = helper.make_node("QLinearConv", ["x", "x_s", "x_z", "w", "w_s", "w_z", "y_s", "y_z"], ["y"],
                                pads=[1, 1, 1, 1])
        y_type = onnx.TensorProto.UINT8
    else:
        inits = {"w": w}
        node = helper.make_node("ConvInteger", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        y_type = onnx.TensorProto.INT32
    counts = count_onnx(_graph([node], inits, [1, 3, 32, 32], onnx.TensorProto.UINT8, y_type))
    assert (counts["macs"], counts["params"]) == (CONV_MACS, CONV_PARAMS)
    assert "uncounted" not in counts


@pytest.mark.parametrize("form", ["QLinearMatMul", "MatMulInteger"])
def test_int8_operator_matrix_products_count_as_the_matmul(form):
    from onnx import helper

    b = np.ones((64, 10), np.uint8)
    if form == "QLinearMatMul":
        inits = {**_q("x"), "b": b, **_q("b"), **_q("y")}
        node = helper.make_node(form, ["x", "x_s", "x_z", "b", "b_s", "b_z", "y_s", "y_z"], ["y"])
        y_type = onnx.TensorProto.UINT8
    else:
        inits = {"b": b}
        node = helper.make_node(form, ["x", "b"], ["y"])
        y_type = onnx.TensorProto.INT32
    counts = count_onnx(_graph([node], inits, [1, 64], onnx.TensorProto.UINT8, y_type))
    assert (counts["macs"], counts["params"]) == (640, 640)


def test_weighted_ops_the_rules_cannot_size_are_named_not_counted_as_zero():
    """An LSTM multiplies by weights that no rule here sizes: its MACs are unknown (the report then shows
    a lower bound and no MACs ratio), its weights still count as parameters."""
    from onnx import helper

    w, r = np.ones((1, 32, 8), np.float32), np.ones((1, 32, 8), np.float32)
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=8, name="lstm0")
    counts = count_onnx(_graph([node], {"w": w, "r": r}, [5, 1, 8]))
    assert counts["uncounted"] == ["lstm0"] and counts["params"] == 512 and counts["macs"] == 0


def test_files_are_bounded_and_external_data_is_not_read(tmp_path, monkeypatch):
    """Counting needs the initializers' dims only: a file's external data (any size, beside a stranger's
    file) is never read, and the file itself is bounded before it is read."""
    import compress.runtime.external_data as external_data  # where the bounded load lives

    model = tiny_cnn()
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").write_bytes(b"")  # the data is gone: the counts must not need it
    assert count_onnx(tmp_path / "ext.onnx")["params"] == count_onnx(model)["params"] == 170
    monkeypatch.setattr(external_data, "MAX_ONNX_BYTES", 64)
    with pytest.raises(ValueError, match="above the bound"):
        count_onnx(tmp_path / "ext.onnx")
