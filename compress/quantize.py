"""INT8 post-training quantization into a Q/DQ ONNX file, with the recipe of the target that will run it.

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

import contextlib
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import CompressError

METHODS = ("minmax", "entropy", "percentile")
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FLOAT_OPS = ("BatchNormalization", "InstanceNormalization", "LayerNormalization")
CALIB_BATCH = 32
EVAL_BATCH = 250
DEFAULT_PERCENTILE = 99.999
HISTOGRAM_BINS = 2048
PRECISION_KEY = "compress.precision"
META_PREFIX = "compress."
TARGETS = ("trt", "cpu")
CPU_ISAS = ("auto", "vnni", "avx2", "arm64")


@dataclass(frozen=True)
class Recipe:
    """How a target wants its INT8 graph: onnxruntime.quantization options plus where accuracy is measured."""

    target: str
    isa: str | None  # cpu: 'vnni', 'avx2' or 'arm64'; trt: None
    activation_type: str  # 'int8' or 'uint8'
    activation_symmetric: bool
    reduce_range: bool
    quantize_bias: bool
    fused_kernels: bool  # measure accuracy in ONNX Runtime's optimized session (its own int8 kernels)
    weights: str = "int8 symmetric per-channel (output-channel axis)"

    def describe(self) -> dict:
        sign = {"int8": "S8", "uint8": "U8"}[self.activation_type]
        return {"target": self.target, "instruction_set": self.isa, "format": "QDQ",
                "data_types": f"{sign}S8 (activations {self.activation_type}, weights int8)",
                "activations": f"{self.activation_type} {'symmetric' if self.activation_symmetric else 'asymmetric'}"
                               " per-tensor",
                "weights": self.weights + (", 7-bit range (reduce_range)" if self.reduce_range else ""),
                "bias": "int32" if self.quantize_bias else "float32", "reduce_range": self.reduce_range}


def recipe_for(target: str = "trt", isa: str = "auto") -> Recipe:
    """The INT8 recipe for `target`; for 'cpu', `isa` 'auto' reads this machine's CPU flags."""
    if target not in TARGETS:
        raise CompressError(f"unknown --target {target!r}; choose from {', '.join(TARGETS)}")
    if target == "trt":
        return Recipe("trt", None, "int8", True, reduce_range=False, quantize_bias=False, fused_kernels=False)
    if isa not in CPU_ISAS:
        raise CompressError(f"unknown --cpu-isa {isa!r}; choose from {', '.join(CPU_ISAS)}")
    if isa == "auto":
        from compress.runtime.cpu_features import int8_isa

        isa = int8_isa()
    if isa == "avx2":
        return Recipe("cpu", "avx2", "uint8", False, reduce_range=True, quantize_bias=True, fused_kernels=True)
    return Recipe("cpu", isa, "int8", False, reduce_range=False, quantize_bias=True, fused_kernels=True)


def eval_session_settings(recipe: Recipe) -> dict:
    """The ONNX Runtime session the reported INT8 accuracy comes from."""
    import onnxruntime as ort

    level = "ORT_ENABLE_ALL" if recipe.fused_kernels else "ORT_ENABLE_BASIC"
    how = ("graph optimizations on: Q/DQ fused into ONNX Runtime's int8 CPU kernels" if recipe.fused_kernels
           else "Q/DQ executed as written (basic optimizations only), as TensorRT's int8 kernels compute it")
    return {"provider": "CPUExecutionProvider", "graph_optimization_level": level, "onnxruntime": ort.__version__,
            "what": how}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def onnx_metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def normalization_of(model, path) -> tuple[list[float], list[float]]:
    props = onnx_metadata(model)
    try:
        return json.loads(props[META_PREFIX + "mean"]), json.loads(props[META_PREFIX + "std"])
    except KeyError as exc:
        raise CompressError(f"{path} lacks the {exc.args[0]} metadata; export it with `compress export`") from None
    except json.JSONDecodeError:
        raise CompressError(f"{path} has unreadable compress.mean/compress.std metadata") from None


def input_info(model) -> tuple[str, int | None, list[int]]:
    """(input name, fixed batch size or None, [C, H, W]) of the graph's single data input."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise CompressError(f"expected one graph input, found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None
    return inputs[0].name, batch, [d.dim_value for d in dims[1:]]


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

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def op_types_to_quantize() -> list[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - set(FLOAT_OPS))


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


# --- structure checks ----------------------------------------------------------------------------------

def weight_nodes(model) -> list:
    """Conv/Gemm/MatMul nodes whose weight is an initializer: the layers a user can keep in float."""
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits]


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
        return qdq_problems(model), [], "compress.quantize.qdq_problems"
    findings = check_model(model)
    errs = [str(f) for f in findings if getattr(f, "severity", "error") == "error"]
    warns = [str(f) for f in findings if getattr(f, "severity", "error") != "error"]
    return errs + qdq_problems(model), warns, "compress.exporting.trt_readiness + compress.quantize.qdq_problems"


# --- measuring -------------------------------------------------------------------------------------------

def onnx_logits(path: str | Path, inputs: np.ndarray, batch_size: int = EVAL_BATCH, *,
                int8_kernels: bool = False) -> np.ndarray:
    """Logits of an ONNX file in ONNX Runtime on the CPU.

    By default graph optimizations stop at the basic level, so every QuantizeLinear/DequantizeLinear
    runs as written: int8 rounding and clipping exactly as the Q/DQ graph defines them, with exact
    products, which is what TensorRT's int8 kernels compute. `int8_kernels=True` lets ONNX Runtime
    fuse Q/DQ into its own int8 kernels instead; on x86 CPUs without VNNI those multiply u8 x s8 pairs
    with 16-bit saturation (VPMADDUBSW) and can lose far more accuracy than the quantization itself.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if int8_kernels
                                     else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    from compress.exporting.parity import run_onnx

    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return run_onnx(session, inputs, batch_size)


def accuracy_of(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == np.asarray(labels)).mean())


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `test` against `reference`, in dB (inf when identical)."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def layer_sensitivity(prepared: Path, x_eval: np.ndarray, y_eval: np.ndarray, *, method: str,
                      cache: Path, workdir: Path, log=_log, recipe: Recipe | None = None) -> list[dict]:
    """Quantize one weight layer at a time (with the inputs/outputs it touches) and measure accuracy
    and logit SQNR against FP32 on held-out images, in the target's kernels; rows sorted worst first."""
    import onnx

    recipe = recipe or recipe_for("trt")
    fused = recipe.fused_kernels
    model = onnx.load(str(prepared))
    inits = {t.name: t for t in model.graph.initializer}
    ref = onnx_logits(prepared, x_eval, int8_kernels=fused)
    base = accuracy_of(ref, y_eval)
    rows = []
    nodes = weight_nodes(model)
    for i, node in enumerate(nodes):
        out = workdir / f"layer{i}.onnx"
        quantize_qdq(prepared, out, cache, method=method, only=[node.name], recipe=recipe)
        logits = onnx_logits(out, x_eval, int8_kernels=fused)
        out.unlink(missing_ok=True)
        acc = accuracy_of(logits, y_eval)
        rows.append({"layer": node.name, "op": node.op_type, "weight_shape": list(inits[node.input[1]].dims),
                     "accuracy": acc, "drop": base - acc, "sqnr_db": sqnr_db(ref, logits)})
        log(f"sensitivity {i + 1}/{len(nodes)} {node.name}: accuracy {acc:.2%} (drop {100 * (base - acc):+.2f} pp), "
            f"SQNR {rows[-1]['sqnr_db']:.1f} dB")
    # Accuracy on a few hundred images moves in coarse steps; SQNR breaks the ties.
    rows.sort(key=lambda r: (-r["drop"], r["sqnr_db"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def sensitivity_markdown(rows: list[dict], fp32_accuracy: float | None = None) -> str:
    head = "| rank | layer | op | weight | accuracy | drop (pp) | logit SQNR (dB) |"
    lines = [head, "| ---: | --- | --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['rank']} | {r['layer']} | {r['op']} | {'x'.join(map(str, r['weight_shape']))} | "
                     f"{r['accuracy']:.2%} | {100 * r['drop']:+.2f} | {r['sqnr_db']:.1f} |")
    if fp32_accuracy is not None:
        lines.append(f"\nFP32 on the same images: {fp32_accuracy:.2%}")
    return "\n".join(lines) + "\n"


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


# --- the command ---------------------------------------------------------------------------------------

@dataclass
class QuantizeOptions:
    data: str
    calib_images: int = 512
    method: str = "minmax"
    exclude: tuple = ()
    keep_float: int = 0
    sensitivity: bool = False
    sensitivity_images: int = 500
    eval_limit: int | None = None
    seed: int = 0
    percentile: float = DEFAULT_PERCENTILE
    int8_kernels: bool = False  # trt target: also measure with ONNX Runtime's fused int8 CPU kernels
    target: str = "trt"
    cpu_isa: str = "auto"  # cpu target: the instruction set to quantize for ('auto': this machine's)


def export_model_dir(model_dir: str | Path, out: str | Path) -> Path:
    """FP32 ONNX of a model directory, with the documented metadata (export.onnx_export)."""
    from compress import __version__
    from compress.artifact import WEIGHTS, file_sha256, load_model_dir

    try:
        from compress.exporting.onnx_export import export_onnx
    except ImportError as exc:
        raise CompressError(f"exporting a model directory needs the export package ({exc}); "
                            "give an .onnx file instead") from None
    model, meta = load_model_dir(model_dir)
    norm = meta["normalization"]
    metadata = {"classes": meta["classes"], "mean": norm["mean"], "std": norm["std"],
                "input_size": meta["input_size"], "arch": meta["arch"], "precision": "fp32",
                "source_sha256": file_sha256(Path(model_dir) / WEIGHTS), "toolkit_version": __version__}
    return Path(export_onnx(model, out, input_size=meta["input_size"], metadata=metadata))


def _finish_model(quantized: Path, source_props: dict[str, str], recipe: Recipe | None = None):
    """The quantized graph with the source's compress.* metadata, precision int8, the recipe, checked."""
    import onnx

    recipe = recipe or recipe_for("trt")
    model = onnx.load(str(quantized))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: v for k, v in source_props.items() if k.startswith(META_PREFIX)})
    props[PRECISION_KEY] = "int8"
    props[META_PREFIX + "quant_target"] = recipe.target
    props[META_PREFIX + "quant_recipe"] = json.dumps(recipe.describe(), sort_keys=True)
    props[META_PREFIX + "quant_eval_session"] = json.dumps(eval_session_settings(recipe), sort_keys=True)
    if recipe.isa:
        props[META_PREFIX + "quant_isa"] = recipe.isa
    del model.metadata_props[:]
    for key in sorted(props):
        model.metadata_props.add(key=key, value=props[key])
    onnx.checker.check_model(model)
    return model


def quantize_onnx(src: str | Path, out: str | Path, calib: np.ndarray, *, recipe: Recipe | None = None,
                  method: str = "minmax", percentile: float = DEFAULT_PERCENTILE, exclude=(),
                  choose_exclusions=None, source_props: dict[str, str] | None = None) -> dict:
    """Quantize the FP32 ONNX file `src` into `out` with `recipe`, calibrated on `calib` (normalized
    float32 N x C x H x W). Checks the graph for its target and writes `out` atomically.

    `choose_exclusions(prepared, cache, workdir, exclude)` may add layers to keep in float once the
    ranges are known (the sensitivity scan). Returns what the quant report records about the graph.
    """
    import onnx

    from compress.atomic import atomic_path

    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise CompressError(f"--out {out} would overwrite the input")
    recipe = recipe or recipe_for("trt")
    if source_props is None:
        source_props = onnx_metadata(onnx.load(str(src), load_external_data=False))
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as tmp:
        tmp = Path(tmp)
        prepared = tmp / "prepared.onnx"
        prepare(src, prepared)
        prepared_model = onnx.load(str(prepared))
        excluded = resolve_layers(prepared_model, exclude)
        cache = tmp / "calibration.json"
        calibrate(prepared, calib, cache, method=method, percentile=percentile, workdir=tmp,
                  symmetric=recipe.activation_symmetric)
        result["calibration_ranges"] = _ranges_summary(cache)
        if choose_exclusions is not None:
            excluded = choose_exclusions(prepared, cache, tmp, excluded)
        quantized = tmp / "quantized.onnx"
        quantize_qdq(prepared, quantized, cache, method=method, exclude=excluded, recipe=recipe)
        qmodel = _finish_model(quantized, source_props, recipe)
    if recipe.target == "trt":
        errors, warnings, checker = trt_findings(qmodel)
        if errors:
            raise CompressError(f"the quantized graph breaks TensorRT's Q/DQ rules: {errors[0]} "
                                f"({len(errors)} problem(s))")
        result["trt_readiness"] = {"checker": checker, "errors": 0, "warnings": warnings}
    else:
        operator_style = [n.op_type for n in qmodel.graph.node
                          if n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")]
        if operator_style:
            raise CompressError(f"the quantized graph has operator-style ops ({operator_style[0]}); the cpu "
                                "recipe writes Q/DQ only")
        result["trt_readiness"] = None
    with atomic_path(out) as tmp_out:
        onnx.save_model(qmodel, str(tmp_out))
    n_weight = len(weight_nodes(prepared_model))
    result.update(excluded_layers=excluded, quantized_layers=n_weight - len(excluded), weight_layers=n_weight)
    return result


def quantize_model(model: str | Path, out: str | Path, opts: QuantizeOptions, log=_log) -> dict:
    """`compress quantize`: writes OUT.onnx and OUT.quant.json; returns the report."""
    import onnx

    from compress.atomic import write_json
    from compress.data import load_dataset_for, normalize, resolve_spec
    from compress.guard import guarded_outputs
    from compress.pipeline import command_line

    t0 = time.perf_counter()
    model, out = Path(model), Path(out)
    if out.suffix != ".onnx":
        raise CompressError(f"--out must name an .onnx file, got {out}")
    if not model.exists():
        raise CompressError(f"model not found: {model}")
    if opts.method not in METHODS:
        raise CompressError(f"unknown --method {opts.method!r}; choose from {', '.join(METHODS)}")
    if opts.calib_images < 1:
        raise CompressError("--calib-images must be positive")
    report_path = out.with_suffix(".quant.json")
    inputs = [("MODEL", model)]
    data_path = Path(resolve_spec(opts.data)).expanduser()
    if data_path.exists():
        inputs.append(("--data", data_path))
    with guarded_outputs(inputs, [("--out", out), ("the report", report_path)], command=command_line()) as job:
        if model.is_dir():
            src = job.work / "fp32.onnx"  # scratch: never a *.fp32.onnx left beside the output
            export_model_dir(model, src)
            log(f"exported {model} to a temporary FP32 ONNX")
        else:
            src = model
        try:
            source = onnx.load(str(src))
        except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a damaged file
            raise CompressError(f"{src} is not a readable ONNX file: {str(exc).strip().splitlines()[0][:200]}") from None
        props = onnx_metadata(source)
        if props.get(PRECISION_KEY, "fp32") != "fp32":
            raise CompressError(f"{src} is {props[PRECISION_KEY]}; quantize the fp32 ONNX")
        mean, std = normalization_of(source, src)
        _, _, input_size = input_info(source)

        calib, calib_data = calibration_inputs(opts.data, opts.calib_images, opts.seed, mean, std,
                                               input_size=input_size)
        if list(calib.shape[1:]) != list(input_size):
            raise CompressError(f"{opts.data} images are {list(calib.shape[1:])}, the model takes {input_size}")
        classes = json.loads(props.get(META_PREFIX + "classes", "null") or "null")
        if classes is not None and len(classes) != len(calib_data.classes):
            raise CompressError(f"{opts.data} has {len(calib_data.classes)} classes, the model {len(classes)}")
        log(f"calibrating on {len(calib)} training images ({opts.method})")

        recipe = recipe_for(opts.target, opts.cpu_isa)
        session = eval_session_settings(recipe)
        report: dict = {"schema": "compress.quant/1", "source": str(model), "source_onnx": None if model.is_dir() else str(src), "onnx": str(out),
                        "data": opts.data, "method": opts.method, "calib_images": int(len(calib)), "calib_split": "train",
                        "seed": opts.seed, "percentile": opts.percentile if opts.method == "percentile" else None,
                        **recipe.describe(), "eval_session": session}
        if recipe.target == "cpu":
            from compress.runtime.cpu_features import describe as cpu_describe

            report["machine_cpu"] = cpu_describe()
            log(f"target cpu, instruction set {recipe.isa}: {report['data_types']}"
                + (", 7-bit weights (reduce_range)" if recipe.reduce_range else ""))

        def choose_exclusions(prepared: Path, cache: Path, tmp: Path, exclude: list[str]) -> list[str]:
            if not (opts.sensitivity or opts.keep_float):
                return exclude
            test = load_dataset_for(opts.data, "test", input_size, limit=opts.sensitivity_images, seed=opts.seed + 1)
            x_eval = normalize(test.eval_images(), mean, std).numpy()
            rows = layer_sensitivity(prepared, x_eval, test.labels.numpy(), method=opts.method, cache=cache,
                                     workdir=tmp, log=log, recipe=recipe)
            base = accuracy_of(onnx_logits(prepared, x_eval, int8_kernels=recipe.fused_kernels), test.labels.numpy())
            report["sensitivity"] = {"images": len(test), "split": "test", "seed": opts.seed + 1,
                                     "fp32_accuracy": base, "layers": rows}
            return list(dict.fromkeys(exclude + [r["layer"] for r in rows[:opts.keep_float]]))

        report.update(quantize_onnx(src, job.tmp[out], calib, recipe=recipe, method=opts.method, percentile=opts.percentile,
                                    exclude=opts.exclude, choose_exclusions=choose_exclusions, source_props=props))
        report["sizes"] = {"fp32_onnx_bytes": src.stat().st_size, "int8_onnx_bytes": job.tmp[out].stat().st_size}

        test = load_dataset_for(opts.data, "test", input_size, limit=opts.eval_limit, seed=opts.seed)
        x_test = normalize(test.eval_images(), mean, std).numpy()
        y_test = test.labels.numpy()
        log(f"evaluating FP32 and INT8 in ONNX Runtime on {len(test)} test images ({session['what']})")
        ref = onnx_logits(src, x_test, int8_kernels=recipe.fused_kernels)
        q = onnx_logits(job.tmp[out], x_test, int8_kernels=recipe.fused_kernels)
        fp32_acc, int8_acc = accuracy_of(ref, y_test), accuracy_of(q, y_test)
        report["accuracy"] = {"images": len(test), "fp32": fp32_acc, "int8": int8_acc, "drop": fp32_acc - int8_acc,
                              "top1_agreement": float((ref.argmax(1) == q.argmax(1)).mean()),
                              "logit_sqnr_db": sqnr_db(ref, q),
                              "runtime": f"onnxruntime {session['onnxruntime']} CPUExecutionProvider, "
                                         f"{session['graph_optimization_level']}: {session['what']}"}
        if opts.int8_kernels and not recipe.fused_kernels:
            fused = onnx_logits(job.tmp[out], x_test, int8_kernels=True)
            report["accuracy"]["int8_ort_kernels"] = accuracy_of(fused, y_test)
            report["accuracy"]["int8_ort_kernels_sqnr_db"] = sqnr_db(ref, fused)
        report["time_s"] = round(time.perf_counter() - t0, 2)
        write_json(job.tmp[report_path], _jsonable(report))
    return report


def _ranges_summary(cache: Path) -> dict:
    """How many tensors were calibrated and the spread of their |range| (the full table stays internal)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    highs = [float(np.max(np.abs(np.concatenate([np.ravel(v.range_value[0]), np.ravel(v.range_value[1])]))))
             for v in load_tensors_data(cache).data.values()]
    return {"tensors": len(highs), "smallest_abs_max": min(highs, default=None),
            "largest_abs_max": max(highs, default=None)}


def _jsonable(obj):
    """JSON has no infinity: an exact match (SQNR = inf) is written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def summary_markdown(report: dict) -> str:
    acc = report["accuracy"]
    lines = ["| model | accuracy | ONNX size |", "| --- | ---: | ---: |",
             f"| FP32 | {acc['fp32']:.2%} | {report['sizes']['fp32_onnx_bytes'] / 2**20:.2f} MiB |",
             f"| INT8 Q/DQ for {_target_label(report)} ({report['method']}, {report['calib_images']} calib images) | "
             f"{acc['int8']:.2%} | "
             f"{report['sizes']['int8_onnx_bytes'] / 2**20:.2f} MiB |",
             *([f"| INT8, ONNX Runtime's fused CPU int8 kernels | {acc['int8_ort_kernels']:.2%} | |"]
               if "int8_ort_kernels" in acc else []),
             "", f"{acc['images']} test images in {acc['runtime']}; top-1 agreement {acc['top1_agreement']:.2%}, "
             f"logit SQNR {acc['logit_sqnr_db']:.1f} dB; {report['quantized_layers']}/{report['weight_layers']} "
             f"weight layers in int8" + (f", float: {', '.join(report['excluded_layers'])}"
                                          if report["excluded_layers"] else "")]
    return "\n".join(lines) + "\n"


def _target_label(report: dict) -> str:
    if report.get("target") == "cpu":
        return f"cpu ({report.get('instruction_set')}, {report.get('data_types', '').split(' ')[0]})"
    return "trt"
