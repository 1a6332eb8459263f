"""INT8 post-training quantization into a Q/DQ ONNX file, with the recipe of the target that will run it.

The modules: `recipe` (each target's recipe), `calibration` (ONNX Runtime's calibrators and
quantize_static, fed and pinned), `graph` (metadata, the checks of the source and of the result),
`measure` (accuracy, SQNR, the sensitivity scan, report tables) and `command` (`quantize_model`, the
`compress quantize` command, and `quantize_onnx`). Everything is importable from here.

Calibration and the graph rewrite are onnxruntime.quantization's (`quantize_static`); this module
feeds it calibration images preprocessed exactly as in evaluation, pins the options of the target,
checks the result, and measures what quantization cost in the kernels that will run the file.

Target `trt` (TensorRT's explicit quantization; GPUs and Jetson):

* QDQ format (QuantizeLinear/DequantizeLinear pairs around float ops), never QLinear* operators;
* signed int8 everywhere, symmetric (every zero point is 0);
* weights per output channel (axis 0 for Conv and Linear/Gemm), activations one scale per tensor;
* biases stay float32 (no int32 DequantizeLinear);
* normalization ops (BatchNormalization that ONNX Runtime could not fold into a Conv, as in
  pre-activation ResNets) stay float, so TensorRT sees their parameters as plain constants.

Target `cpu` (ONNX Runtime's CPU execution provider), after ONNX Runtime's quantization guide:

* QDQ format: ONNX Runtime fuses it into its int8 kernels; S8S8 in QOperator format is slow on x86;
* activations asymmetric (a ReLU output uses all 256 levels), weights symmetric per channel,
  biases int32 (what the fused QLinearConv consumes);
* with VNNI (or on ARM): S8S8, the guide's first choice;
* x86 without VNNI (AVX2, AVX-512 without VNNI): U8S8 with 7-bit weights (`reduce_range`), because
  the u8 x s8 kernels sum pairs of products into 16 bits (VPMADDUBSW) and saturate otherwise.

Accuracy is measured where the file will run: for `trt`, every Q/DQ executed as written (exact
products, as TensorRT's int8 kernels compute); for `cpu`, ONNX Runtime's fully optimized session,
whose fused int8 kernels are the ones a deployment runs.
"""

from __future__ import annotations

from compress.quantization.calibration import (
    CALIB_BATCH,
    DEFAULT_PERCENTILE,
    FLOAT_OPS,
    HISTOGRAM_BINS,
    METHODS,
    ArrayReader,
    calibrate,
    calibration_inputs,
    op_types_to_quantize,
    prepare,
    quantize_qdq,
)
from compress.quantization.command import (
    QuantizeOptions,
    check_options,
    export_model_dir,
    quantize_model,
    quantize_onnx,
    third_party_errors,
)
from compress.quantization.graph import (
    KNOWN_DOMAINS,
    META_PREFIX,
    PRECISION_KEY,
    WEIGHT_OPS,
    check_finite_initializers,
    check_quantizable,
    classes_of,
    input_info,
    node_in_cycle,
    normalization_of,
    onnx_metadata,
    qdq_problems,
    resolve_layers,
    trt_findings,
    weight_nodes,
)
from compress.quantization.measure import (
    EVAL_BATCH,
    _jsonable,
    accuracy_of,
    layer_sensitivity,
    onnx_logits,
    sensitivity_markdown,
    sqnr_db,
    summary_markdown,
)
from compress.quantization.recipe import CPU_ISAS, TARGETS, Recipe, eval_session_settings, recipe_for

__all__ = [
    "CALIB_BATCH", "CPU_ISAS", "DEFAULT_PERCENTILE", "EVAL_BATCH", "FLOAT_OPS", "HISTOGRAM_BINS", "KNOWN_DOMAINS",
    "META_PREFIX", "METHODS", "PRECISION_KEY", "TARGETS", "WEIGHT_OPS", "ArrayReader", "QuantizeOptions", "Recipe",
    "_jsonable", "accuracy_of", "calibrate", "calibration_inputs", "check_finite_initializers", "check_options",
    "check_quantizable", "classes_of", "eval_session_settings", "export_model_dir", "input_info",
    "layer_sensitivity", "node_in_cycle", "normalization_of", "onnx_logits", "onnx_metadata",
    "op_types_to_quantize", "prepare", "qdq_problems", "quantize_model", "quantize_onnx", "quantize_qdq",
    "recipe_for", "resolve_layers", "sensitivity_markdown", "sqnr_db", "summary_markdown", "third_party_errors",
    "trt_findings", "weight_nodes",
]
