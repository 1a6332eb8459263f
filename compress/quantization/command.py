"""`compress quantize`: an FP32 ONNX file (or a model directory, exported first) into an INT8 Q/DQ ONNX
file for the chosen target, with OUT.quant.json recording what was done and what it cost."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import CompressError, one_error_class
from compress.quantization import calibration
from compress.quantization.calibration import DEFAULT_PERCENTILE, METHODS
from compress.quantization.graph import (
    META_PREFIX,
    PRECISION_KEY,
    check_classifier_outputs,
    check_quantizable,
    classes_of,
    image_size,
    int8_weight_layers,
    normalization_of,
    onnx_metadata,
    resolve_layers,
    trt_findings,
    weight_nodes,
)
from compress.quantization.measure import _jsonable, _log, _ranges_summary, accuracy_of, layer_sensitivity, onnx_logits, sqnr_db
from compress.quantization.recipe import Recipe, eval_session_settings, recipe_for

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
    """FP32 ONNX of a model directory, parity-checked, with the documented metadata (compress.export)."""
    from compress.stages.export import export

    report = export(model_dir, out, log=lambda _msg: None)
    return Path(report["onnx"]["path"])


def _load_source(src: Path):
    """The user's FP32 graph, parsed and its external data bounded (compress.exporting.external_data): every
    later reader of `src`, ORT's preprocessing included, loads that same data."""
    from compress.exporting.errors import ExportError
    from compress.exporting.onnx_file import load_onnx

    try:
        return load_onnx(src, check=False)
    except ExportError as exc:
        raise CompressError(str(exc)) from None


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


@contextlib.contextmanager
def third_party_errors(src: Path):
    """ONNX Runtime's quantizer fails with its own exception types (and an assert for NaN ranges): one line
    naming the file instead of a traceback. The chained cause keeps the traceback for COMPRESS_DEBUG=1."""
    try:
        yield
    except (CompressError, OSError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever onnxruntime.quantization raises
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise CompressError(f"ONNX Runtime's quantizer failed on {src}: {type(exc).__name__}: {first}") from exc


def quantize_onnx(src: str | Path, out: str | Path, calib: np.ndarray, *, recipe: Recipe | None = None,
                  method: str = "minmax", percentile: float = DEFAULT_PERCENTILE, exclude=(),
                  choose_exclusions=None, source_props: dict[str, str] | None = None) -> dict:
    """Quantize the FP32 ONNX file `src` into `out` with `recipe`, calibrated on `calib` (normalized
    float32 N x C x H x W). Checks the graph for its target and writes `out` atomically.

    `choose_exclusions(prepared, cache, workdir, exclude)` may add layers to keep in float once the
    ranges are known (the sensitivity scan). Returns what the quant report records about the graph.
    Without `source_props` the source is read and checked here (check_quantizable); with them, the
    caller has done both.
    """
    import onnx

    from compress.atomic import atomic_path

    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve():
        raise CompressError(f"--out {out} would overwrite the input")
    recipe = recipe or recipe_for("trt")
    if source_props is None:
        source = _load_source(src)
        check_quantizable(source, src)
        source_props = onnx_metadata(source)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as tmp, third_party_errors(src):
        tmp = Path(tmp)
        prepared = tmp / "prepared.onnx"
        calibration.prepare(src, prepared)
        prepared_model = onnx.load(str(prepared))
        excluded = resolve_layers(prepared_model, exclude)
        cache = tmp / "calibration.json"
        calibration.calibrate(prepared, calib, cache, method=method, percentile=percentile, workdir=tmp,
                              symmetric=recipe.activation_symmetric)
        result["calibration_ranges"] = _ranges_summary(cache)
        if choose_exclusions is not None:
            excluded = choose_exclusions(prepared, cache, tmp, excluded)
        quantized = tmp / "quantized.onnx"
        calibration.quantize_qdq(prepared, quantized, cache, method=method, exclude=excluded, recipe=recipe)
        qmodel = _finish_model(quantized, source_props, recipe)
    n_weight = len(weight_nodes(prepared_model))
    quantized_layers = len(int8_weight_layers(qmodel))
    if quantized_layers != n_weight - len(excluded):
        # ONNX Runtime's quantizer leaves a tensor it cannot type in float with only a log line.
        raise CompressError(f"{quantized_layers} of {n_weight} weight layers came out in int8, but "
                            f"{n_weight - len(excluded)} were asked for ({len(excluded)} kept in float); "
                            "the quantizer left some in float")
    result["trt_readiness"] = _check_for_target(qmodel, recipe)
    with atomic_path(out) as tmp_out:
        onnx.save_model(qmodel, str(tmp_out))
    result.update(excluded_layers=excluded, quantized_layers=quantized_layers, weight_layers=n_weight)
    return result


def _check_for_target(qmodel, recipe: Recipe) -> dict | None:
    """The quantized graph against its target's rules; the trt readiness summary (None for cpu)."""
    if recipe.target == "trt":
        errors, warnings, checker = trt_findings(qmodel)
        if errors:
            raise CompressError(f"the quantized graph breaks TensorRT's Q/DQ rules: {errors[0]} "
                                f"({len(errors)} problem(s))")
        return {"checker": checker, "errors": 0, "warnings": warnings}
    operator_style = [n.op_type for n in qmodel.graph.node
                      if n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")]
    if operator_style:
        raise CompressError(f"the quantized graph has operator-style ops ({operator_style[0]}); the cpu "
                            "recipe writes Q/DQ only")
    return None


def check_options(opts: QuantizeOptions) -> None:
    """The options a library caller passes, checked as the CLI's types check them."""
    from compress.limits import check_seed

    if opts.method not in METHODS:
        raise CompressError(f"unknown --method {opts.method!r}; choose from {', '.join(METHODS)}")
    for name in ("calib_images", "sensitivity_images"):
        value = getattr(opts, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CompressError(f"--{name.replace('_', '-')} must be a positive whole number, got {value!r}")
    if isinstance(opts.keep_float, bool) or not isinstance(opts.keep_float, int) or opts.keep_float < 0:
        raise CompressError(f"--keep-float must be a whole number >= 0, got {opts.keep_float!r}")
    if not isinstance(opts.percentile, (int, float)) or not (math.isfinite(opts.percentile)
                                                             and 0 < opts.percentile <= 100):
        raise CompressError(f"--percentile must be a finite number in (0, 100], got {opts.percentile!r}")
    check_seed(opts.seed, "--seed")
    check_seed(opts.seed + 1, "--seed + 1 (the sensitivity images' seed)")
    _check_companions(opts)


def _check_companions(opts: QuantizeOptions) -> None:
    """Options that only mean something with another one are refused without it, rather than ignored."""
    if opts.percentile != DEFAULT_PERCENTILE and opts.method != "percentile":
        raise CompressError(f"--percentile applies to --method percentile, not {opts.method}")
    if opts.cpu_isa != "auto" and opts.target != "cpu":
        raise CompressError(f"--cpu-isa applies to --target cpu, not {opts.target}")
    if opts.int8_kernels and opts.target == "cpu":
        raise CompressError("--ort-int8-kernels applies to --target trt; the cpu target is measured in those "
                            "kernels already")
    names = list(opts.exclude)
    if any(not isinstance(n, str) or not n.strip() for n in names):
        raise CompressError(f"--exclude takes layer names, got an empty one in {names}")
    if len(set(names)) != len(names):
        raise CompressError(f"--exclude names {next(n for n in names if names.count(n) > 1)!r} twice")


def read_source(model: Path, work: Path, log) -> tuple[Path, object]:
    """(the FP32 ONNX file, its loaded and checked graph): a model directory is exported into the scratch
    folder first, never to a *.fp32.onnx left beside the output."""
    if model.is_dir():
        src = work / "fp32.onnx"
        export_model_dir(model, src)
        log(f"exported {model} to a temporary FP32 ONNX")
    else:
        src = model
    source = _load_source(src)
    props = onnx_metadata(source)
    if props.get(PRECISION_KEY, "fp32") != "fp32":
        raise CompressError(f"{src} is {props[PRECISION_KEY]}; quantize the fp32 ONNX")
    check_quantizable(source, model)  # named as the user gave it, not as the scratch export
    check_classifier_outputs(source, model)
    return src, source


@one_error_class
def quantize_model(model: str | Path, out: str | Path, opts: QuantizeOptions, log=_log) -> dict:
    """`compress quantize`: writes OUT.onnx and OUT.quant.json; returns the report."""
    from compress.atomic import write_json
    from compress.data.options import data_source
    from compress.guard import guarded_outputs
    from compress.stages._run import command_line

    t0 = time.perf_counter()
    model, out = Path(model), Path(out)
    if out.suffix != ".onnx":
        raise CompressError(f"--out must name an .onnx file, got {out}")
    if not model.exists():
        raise CompressError(f"model not found: {model}")
    check_options(opts)
    report_path = out.with_suffix(".quant.json")
    inputs = [("MODEL", model)]
    source = data_source(opts.data)
    if source is not None:
        inputs.append(("--data", source))
    with guarded_outputs(inputs, [("--out", out), ("the report", report_path)], command=command_line()) as job:
        src, source = read_source(model, job.work, log)
        props = onnx_metadata(source)
        mean, std = normalization_of(source, model)
        input_size = image_size(source, model)
        classes = classes_of(source, model)
        del source  # the graph and its weights: calibration reads the file again

        calib, calib_data = calibration.calibration_inputs(opts.data, opts.calib_images, opts.seed, mean, std,
                                                           input_size=input_size)
        if list(calib.shape[1:]) != list(input_size):
            square = " (images are sized to squares; quantize takes models of a square input)" \
                if input_size[-1] != input_size[-2] else ""
            raise CompressError(f"{opts.data} images are {list(calib.shape[1:])}, the model takes {input_size}{square}")
        if classes is not None:
            from compress.labels import check_class_names

            check_class_names(classes, calib_data.classes, model, "the file")
        log(f"calibrating on {len(calib)} training images ({opts.method})")

        recipe = recipe_for(opts.target, opts.cpu_isa)
        report = _report_head(model, src, out, opts, recipe, len(calib), log)
        scan = _sensitivity_scan(opts, input_size, mean, std, recipe, report, log)
        report.update(quantize_onnx(src, job.tmp[out], calib, recipe=recipe, method=opts.method,
                                    percentile=opts.percentile, exclude=opts.exclude, choose_exclusions=scan,
                                    source_props=props))
        report["sizes"] = {"fp32_onnx_bytes": src.stat().st_size, "int8_onnx_bytes": job.tmp[out].stat().st_size}
        report["accuracy"] = _accuracy(src, job.tmp[out], opts, input_size, mean, std, recipe, log)
        report["time_s"] = round(time.perf_counter() - t0, 2)
        write_json(job.tmp[report_path], _jsonable(report))
    return report


def _report_head(model: Path, src: Path, out: Path, opts: QuantizeOptions, recipe: Recipe, n_calib: int,
                 log) -> dict:
    """What the report says about the request, the recipe and the session accuracy is measured in."""
    report: dict = {"schema": "compress.quant/1", "source": str(model),
                    "source_onnx": None if model.is_dir() else str(src), "onnx": str(out),
                    "data": opts.data, "method": opts.method, "calib_images": int(n_calib), "calib_split": "train",
                    "seed": opts.seed, "percentile": opts.percentile if opts.method == "percentile" else None,
                    **recipe.describe(), "eval_session": eval_session_settings(recipe)}
    if recipe.target == "cpu":
        from compress.runtime.cpu_features import describe as cpu_describe

        report["machine_cpu"] = cpu_describe()
        log(f"target cpu, instruction set {recipe.isa}: {report['data_types']}"
            + (", 7-bit weights (reduce_range)" if recipe.reduce_range else ""))
    return report


def _sensitivity_scan(opts: QuantizeOptions, input_size, mean, std, recipe: Recipe, report: dict, log):
    """The `choose_exclusions` hook of quantize_onnx: with --sensitivity or --keep-float, quantize one layer
    at a time on training images (with the evaluation's preprocessing), record the ranking in `report`, and
    keep the worst K in float. Not test images: the layers kept in float would be chosen on the images the
    INT8 accuracy is then reported on."""
    def choose_exclusions(prepared: Path, cache: Path, tmp: Path, exclude: list[str]) -> list[str]:
        from compress.data import load_dataset_for, normalize

        if not (opts.sensitivity or opts.keep_float):
            return exclude
        ranking = load_dataset_for(opts.data, "train", input_size, limit=opts.sensitivity_images, seed=opts.seed + 1)
        x_eval = normalize(ranking.eval_images(), mean, std).numpy()
        rows = layer_sensitivity(prepared, x_eval, ranking.labels.numpy(), method=opts.method, cache=cache,
                                 workdir=tmp, log=log, recipe=recipe)
        base = accuracy_of(onnx_logits(prepared, x_eval, int8_kernels=recipe.fused_kernels), ranking.labels.numpy(),
                           "the FP32 model")
        report["sensitivity"] = {"images": len(ranking), "split": "train", "seed": opts.seed + 1,
                                 "fp32_accuracy": base, "layers": rows}
        return list(dict.fromkeys(exclude + [r["layer"] for r in rows[:opts.keep_float]]))

    return choose_exclusions


def _accuracy(src: Path, quantized: Path, opts: QuantizeOptions, input_size, mean, std, recipe: Recipe,
              log) -> dict:
    """FP32 and INT8 accuracy on the test split, in the session the target's kernels run in."""
    from compress.data import load_dataset_for, normalize

    session = eval_session_settings(recipe)
    test = load_dataset_for(opts.data, "test", input_size, limit=opts.eval_limit, seed=opts.seed)
    x_test = normalize(test.eval_images(), mean, std).numpy()
    y_test = test.labels.numpy()
    log(f"evaluating FP32 and INT8 in ONNX Runtime on {len(test)} test images ({session['what']})")
    ref = onnx_logits(src, x_test, int8_kernels=recipe.fused_kernels)
    q = onnx_logits(quantized, x_test, int8_kernels=recipe.fused_kernels)
    classes = len(test.classes)
    fp32_acc, int8_acc = accuracy_of(ref, y_test, "the FP32 model", classes), accuracy_of(q, y_test, "the INT8 model",
                                                                                           classes)
    accuracy = {"images": len(test), "fp32": fp32_acc, "int8": int8_acc, "drop": fp32_acc - int8_acc,
                "top1_agreement": float((ref.argmax(1) == q.argmax(1)).mean()),
                "logit_sqnr_db": sqnr_db(ref, q),
                "runtime": f"onnxruntime {session['onnxruntime']} CPUExecutionProvider, "
                           f"{session['graph_optimization_level']}: {session['what']}"}
    from compress.runtime.cpu_features import saturates

    if recipe.target == "cpu" and saturates(recipe.isa):  # the kernels here are not its target's
        accuracy["not_the_targets"] = (f"measured on a CPU without VNNI, whose int8 kernels saturate on this "
                                       f"file's 8-bit weights: on a {recipe.isa} CPU its INT8 accuracy differs")
        log(f"warning: {accuracy['not_the_targets']}")
    if opts.int8_kernels and not recipe.fused_kernels:
        fused = onnx_logits(quantized, x_test, int8_kernels=True)
        accuracy["int8_ort_kernels"] = accuracy_of(fused, y_test, "the INT8 model in ONNX Runtime's int8 kernels",
                                                   classes)
        accuracy["int8_ort_kernels_sqnr_db"] = sqnr_db(ref, fused)
    return accuracy
