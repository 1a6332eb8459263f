"""Measuring what quantization cost: logits in ONNX Runtime, accuracy, SQNR, the per-layer sensitivity
scan, and the report's tables."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from compress.errors import CompressError
from compress.quantization import calibration
from compress.quantization.graph import weight_nodes
from compress.quantization.recipe import Recipe, recipe_for

EVAL_BATCH = 250


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


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


def accuracy_of(logits: np.ndarray, labels: np.ndarray, what: str = "the model", classes: int | None = None) -> float:
    """Top-1 accuracy, refused (CompressError) for outputs that are not `classes` logits per image or that hold
    NaN or infinity: argmax over either still picks a class and gives a plausible-looking figure."""
    logits = np.asarray(logits)
    if logits.ndim != 2 or len(logits) != len(labels) or logits.shape[1] < 2 \
            or (classes is not None and logits.shape[1] != classes):
        wanted = f"N x {classes}" if classes is not None else "N x classes"
        raise CompressError(f"{what} returns {' x '.join(['N', *map(str, logits.shape[1:])])}, not {wanted} logits; "
                            "accuracy is measured for classifiers only")
    broken = int((~np.isfinite(logits).all(axis=1)).sum())
    if broken:
        raise CompressError(f"{what} outputs NaN or infinite logits for {broken:,} of {len(logits):,} images; no "
                            "accuracy is reported from a broken model")
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
    base = accuracy_of(ref, y_eval, "the FP32 model")
    rows = []
    nodes = weight_nodes(model)
    for i, node in enumerate(nodes):
        out = workdir / f"layer{i}.onnx"
        calibration.quantize_qdq(prepared, out, cache, method=method, only=[node.name], recipe=recipe)
        logits = onnx_logits(out, x_eval, int8_kernels=fused)
        out.unlink(missing_ok=True)
        try:
            acc = accuracy_of(logits, y_eval, f"the model with {node.name} in INT8")
        except CompressError:  # NaN or infinite logits with this layer in INT8: the most sensitive of all
            acc = 0.0
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
