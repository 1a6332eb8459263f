"""compress.runtime.errors.readable: a runtime library's error as one line a user can act on."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.runtime.errors import readable
from compress.runtime.runners import open_runner

# Messages as ONNX Runtime 1.32 and OpenVINO 2026.4 raise them.
ORT_RESHAPE = ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node. Name:'' "
               "Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/reshape_helper.h:84 "
               "onnxruntime::ReshapeHelper::ReshapeHelper(const onnxruntime::TensorShape&, "
               "onnxruntime::TensorShapeVector&, bool) size != 0 && (input_shape_size % size) == 0 was false. The "
               "input tensor cannot be reshaped to the requested shape. Input shape:{1,3,8,8}, requested shape:{-1,7}")
OPENVINO_CONVERT = ("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'false' failed at "
                    "src/frontends/common_translators/src/unconverted_ops_report.cpp:151:\nFrontEnd API failed with "
                    "OpConversionFailure:\nModel wasn't fully converted.\nSummary:\n-- No conversion rule found for "
                    "operations: FooOp-17\n\n")
OPENVINO_RESHAPE = ("Exception from src/inference/src/cpp/infer_request.cpp:224:\nException from "
                    "src/plugins/intel_cpu/src/node.cpp:794:\n[CPU] Reshape node with name 'logits' Check "
                    "'minusOneCount <= 1 && inputProduct == outputProduct' failed at "
                    "src/plugins/intel_cpu/src/shape_inference/custom/reshape.cpp:77:\n[cpu]reshape: the shape of "
                    "input data (1.3.8.8) conflicts with the reshape pattern (-1.7)\n\n\n")


@pytest.mark.parametrize("message,expected", [
    (ORT_RESHAPE, "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Reshape node. "
                  "Name:'' Status Message: size != 0 && (input_shape_size % size) == 0 was false. The input tensor "
                  "cannot be reshaped to the requested shape. Input shape:{1,3,8,8}, requested shape:{-1,7}"),
    (OPENVINO_CONVERT, "FrontEnd API failed with OpConversionFailure: Model wasn't fully converted. Summary: -- No "
                       "conversion rule found for operations: FooOp-17"),
    (OPENVINO_RESHAPE, "[CPU] Reshape node with name 'logits' [cpu]reshape: the shape of input data (1.3.8.8) "
                       "conflicts with the reshape pattern (-1.7)"),
    ("Input channels C (3) differ", "Input channels C (3) differ"),  # no location: unchanged
    ("file weights.c:3 missing", "file weights.c:3 missing"),  # a user's file name is not a source location
    ("Invalid input name: input.cc:1", "Invalid input name: input.cc:1"),
    ("", "RuntimeError"),
])
def test_source_locations_and_signatures_are_dropped(message, expected):
    assert readable(RuntimeError(message)) == expected


def test_a_long_message_is_cut():
    assert len(readable(RuntimeError("x " * 400))) == 300


def _unreshapable(path):
    shape = numpy_helper.from_array(np.array([-1, 7], np.int64), "s")
    graph = helper.make_graph([helper.make_node("Reshape", ["input", "s"], ["logits"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino"])
def test_a_graph_that_fails_when_run_is_named_without_cpp_locations(tmp_path, backend):
    from compress.runtime.bench import one_line

    if backend == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'cnn-compress[openvino]')")
    path = _unreshapable(tmp_path / "reshape.onnx")
    with pytest.raises(Exception) as failed:
        with open_runner(path, backend) as runner:
            runner.infer(np.zeros((1, 3, 8, 8), np.float32))
    line = one_line(failed.value)
    assert "reshape" in line.lower() and "\n" not in line
    assert ".cpp:" not in line and ".h:" not in line and "onnxruntime::" not in line, line
