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
