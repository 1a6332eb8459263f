"""Calibration (activation ranges) and the graph rewrite, both onnxruntime.quantization's: this module
feeds them calibration images preprocessed exactly as in evaluation and pins the recipe's options."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from compress.errors import CompressError
from compress.quantization.graph import input_info
from compress.quantization.recipe import Recipe, recipe_for

METHODS = ("minmax", "entropy", "percentile")
FLOAT_OPS = ("BatchNormalization", "InstanceNormalization", "LayerNormalization")
CALIB_BATCH = 32
DEFAULT_PERCENTILE = 99.999
HISTOGRAM_BINS = 2048


def _import_ort_quantization():
    try:
        import onnxruntime.quantization as q
    except ImportError as exc:
        raise CompressError(f"INT8 quantization needs onnxruntime ({exc}); pip install onnxruntime") from None
    return q


# --- calibration data ----------------------------------------------------------------------------------

class ArrayReader:
    """A CalibrationDataReader over an in-memory array, in batches; supports the ranged reads that
    ONNX Runtime uses to collect statistics a few batches at a time (bounded memory)."""

    def __init__(self, inputs: np.ndarray, input_name: str = "input", batch_size: int = CALIB_BATCH):
        if len(inputs) == 0:
            raise ValueError("no calibration inputs")
        self.inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = batch_size
        self.n_batches = math.ceil(len(self.inputs) / batch_size)
        self.set_range(0, self.n_batches)

    def __len__(self) -> int:
        return self.n_batches

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, self.n_batches)

    def rewind(self) -> None:
        self.set_range(0, self.n_batches)

    def get_next(self):
        if self._next >= self._end:
            return None
        b = self._next * self.batch_size
        self._next += 1
        return {self.input_name: self.inputs[b:b + self.batch_size]}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def stride(self, max_batches: int = 4) -> int:
        """Largest batch count <= max_batches that divides the number of batches (ORT requires it)."""
        return max(d for d in range(1, max_batches + 1) if self.n_batches % d == 0)


def calibration_inputs(data_spec: str, n: int, seed: int, mean, std, *, split: str = "train", input_size=None):
    """Normalized float32 images drawn stratified and seeded from `split`, as evaluation preprocesses them."""
    from compress.data import load_dataset, load_dataset_for, normalize

    data = (load_dataset_for(data_spec, split, input_size, limit=n, seed=seed) if input_size is not None
            else load_dataset(data_spec, split, limit=n, seed=seed))
    return normalize(data.eval_images(), mean, std).numpy(), data


# --- the quantization itself ---------------------------------------------------------------------------

def prepare(src: str | Path, dst: str | Path) -> None:
    """ONNX Runtime's pre-processing: shape inference plus basic graph optimizations, which fold each
    BatchNormalization into the Conv before it, so weights are quantized as they will be executed."""
    _import_ort_quantization()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # It logs a full traceback when its optimization pass fails, then carries on: the graph checks run
    # before it (graph.check_quantizable), and any failure that follows is one line (command.third_party_errors).
    logger = logging.getLogger("onnxruntime.quantization.shape_inference")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    finally:
        logger.setLevel(level)


def op_types_to_quantize() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - set(FLOAT_OPS))


NORMALIZER_OPS = ("Softmax", "LogSoftmax")


def output_normalizers(prepared: str | Path) -> list[str]:
    """Softmax nodes whose output leaves the graph (an ultralytics classifier's probabilities), kept float:
    quantized, probabilities near 1/classes fell to a few int8 steps, and their top class then matched the
    logits' on none of 64 images of an untrained YOLOv8n-cls (on a trained one, wherever the top two sit
    within a step)."""
    import onnx

    graph = onnx.load(str(prepared), load_external_data=False).graph
    outputs = {o.name for o in graph.output}
    nodes = [n for n in graph.node if n.op_type in NORMALIZER_OPS and outputs & set(n.output)]
    unnamed = [n for n in nodes if not n.name]
    if unnamed:
        raise CompressError(f"the {unnamed[0].op_type} that makes output {unnamed[0].output[0]} has no node name, "
                            "which keeping it in float needs")
    return [n.name for n in nodes]


def _calibration_method(method: str):
    q = _import_ort_quantization()
    if method not in METHODS:
        raise CompressError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    return {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
            "percentile": q.CalibrationMethod.Percentile}[method]


def calibrate(prepared: str | Path, calib: np.ndarray, cache: str | Path, *, method: str = "minmax",
              percentile: float = DEFAULT_PERCENTILE, batch_size: int = CALIB_BATCH,
              workdir: str | Path | None = None, histogram_bins: int = HISTOGRAM_BINS,
              symmetric: bool = True) -> None:
    """Collect activation ranges with ONNX Runtime's calibrator and store them in `cache`, the
    calibration cache that quantize_static reads (so several quantizations share one calibration).

    Calling the calibrator directly, rather than through quantize_static, is what lets the histogram
    be set up: quantize_static leaves the entropy calibrator at 128 bins, which is also its number of
    quantized bins, so the KL search has a single candidate and entropy degenerates to min/max.
    Here the histograms get `histogram_bins` bins (2048, as in TensorRT's entropy calibration) and 255
    quantized bins, the levels of symmetric int8. ONNX Runtime's KL search is pure Python and costs
    about a second per tensor at 2048 bins.
    """
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    calibrate_method = _calibration_method(method)
    name, fixed_batch, _ = input_info(onnx.load(str(prepared), load_external_data=False))
    reader = ArrayReader(calib, name, fixed_batch or batch_size)
    # ONNX Runtime's histogram calibrators print progress on stdout; keep stdout for --json output.
    with tempfile.TemporaryDirectory(prefix="calib-", dir=workdir) as tmp, contextlib.redirect_stdout(sys.stderr):
        calibrator = create_calibrator(
            Path(prepared), op_types_to_quantize(), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=calibrate_method,
            extra_options={"symmetric": bool(symmetric), "num_bins": int(histogram_bins), "num_quantized_bins": 255,
                           "percentile": float(percentile)})
        # A few batches at a time, merged: memory stays bounded for every method.
        stride = reader.stride()
        for start in range(0, len(reader), stride):
            reader.set_range(start, start + stride)
            calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, Path(cache))


def quantize_qdq(prepared: str | Path, out: str | Path, cache: str | Path, *, method: str = "minmax",
                 exclude=(), only=None, recipe: Recipe | None = None) -> None:
    """quantize_static with the recipe's settings (TensorRT's by default) and the ranges in `cache` (from
    `calibrate` with the same method). `only` restricts quantization to the named nodes."""
    import inspect

    recipe = recipe or recipe_for("trt")
    q = _import_ort_quantization()
    if "calibration_cache_path" not in inspect.signature(q.quantize_static).parameters:
        raise CompressError("this onnxruntime's quantize_static cannot reuse calibration ranges; "
                            "pip install -U onnxruntime")
    if not Path(cache).is_file():
        raise ValueError(f"no calibration ranges at {cache}; run calibrate() first")
    if not only:  # `only` quantizes the named nodes alone (the sensitivity scan, once per layer): nothing to keep out
        exclude = [*exclude, *output_normalizers(prepared)]
    q.quantize_static(
        str(prepared), str(out), None,
        quant_format=q.QuantFormat.QDQ,
        op_types_to_quantize=op_types_to_quantize(),
        per_channel=True,
        reduce_range=recipe.reduce_range,
        activation_type=q.QuantType.QInt8 if recipe.activation_type == "int8" else q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        nodes_to_quantize=list(only) if only else None,
        nodes_to_exclude=list(exclude) or None,
        calibrate_method=_calibration_method(method),
        extra_options={
            "ActivationSymmetric": recipe.activation_symmetric,
            "WeightSymmetric": True,
            # trt: int32 biases would need DequantizeLinear(int32), which TensorRT lacks; cpu: the fused
            # QLinearConv takes its bias as int32.
            "QuantizeBias": recipe.quantize_bias,
        },
        calibration_cache_path=str(cache),
    )
