"""The export stage: an nn.Module or a model directory → parity-checked ONNX (FP32, FP16) → TensorRT engine;
an ONNX file → FP16 and/or an engine; a Q/DQ ONNX file → an INT8 engine.

Every output is checked against every input before any work (nothing may overwrite an input, the dataset
included), one writer holds the output's lock, and the ONNX files are written under temporary names and
renamed only once every parity check has passed. The compress.exporting package knows nothing of model
directories or datasets: this module loads them and passes modules, metadata and input arrays in.
An ONNX source needs no torch (the runtime install builds engines from ONNX files).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from compress.errors import CompressError, first_line, one_error_class, write_failure
from compress.labels import check_class_names, placeholder_names
from compress.limits import MAX_BATCH, check_allocation, check_count

RANDOM_INPUTS = 64  # parity inputs without a dataset: seeded random images
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Parity:
    """How exported files are checked: on `limit` test images of `data` (a data spec; the whole split by
    default) or on `limit` seeded random images (64 by default); FP32 within `atol` and `min_agreement`."""

    data: str | None = None
    limit: int | None = None
    atol: float = 1e-3
    min_agreement: float = 0.999


@dataclass(frozen=True)
class OnnxShape:
    """The ONNX graph's opset and batch: a dimension named 'batch', or fixed to `batch` when not dynamic
    (default: the engine profile's OPT, else the example's batch, else 1)."""

    opset: int = 17
    dynamic_batch: bool = True
    batch: int | None = None


@dataclass(frozen=True)
class Engine:
    """A TensorRT engine to build (with its PATH.json sidecar): batch `profile` MIN:OPT:MAX (default 1:8:32)."""

    path: Path
    profile: Any = None  # "1:8:32", a BatchProfile, or None
    workspace_mb: int | None = None
    timing_cache: Path | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    verbose: bool = False


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export_metadata(meta: dict, source_sha256: str, precision: str = "fp32") -> dict:
    """The compress.* ONNX metadata (docs/ARTIFACTS.md) of the model model.json's `meta` describes."""
    from compress import __version__

    norm = meta["normalization"]
    metadata = {"mean": norm["mean"], "std": norm["std"], "input_size": meta["input_size"], "arch": meta["arch"],
                "precision": precision, "source_sha256": source_sha256, "toolkit_version": __version__}
    if meta.get("classes") is not None:  # a detector may have none
        metadata["classes"] = meta["classes"]
    return metadata


def state_sha256(model) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes): its weights' fingerprint."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{list(tensor.shape)}".encode())
        if t.numel():
            digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@one_error_class
def export(source, path: str | Path | None = None, *, precision: str = "fp32", example=None,
           meta: dict | None = None, check: Parity | bool = True, onnx: OnnxShape = OnnxShape(),
           engine: Engine | None = None, log: Callable[[str], None] = _stderr) -> dict:
    """Export `source` to ONNX at `path` (holding `precision`) and/or a TensorRT `engine`; returns the report.

    `source` is an nn.Module (with `example`, one input batch), a model directory, or an .onnx file.
    `precision` "fp16" writes the FP32 file beside `path` as *.fp32.onnx; "int8" builds an engine from a
    Q/DQ ONNX `source` (from compress.quantize) and writes no ONNX. Without `path`, the ONNX files an
    engine needs go beside it (ENGINE.onnx, ENGINE.fp16.onnx). `meta` describes a module's outputs and
    inputs ({"classes", "mean", "std", "arch"}; defaults: class0..N-1, mean 0, std 1, the class name).
    `check` (a Parity) sets the parity check every exported file passes; False skips it, for files that
    are timed and deleted, never shipped. Report: {"onnx": ..., "fp16": ..., "engine": ...}, each with
    its path and parity.
    """
    if precision not in PRECISIONS:
        raise CompressError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    parity = check if isinstance(check, Parity) else (Parity() if check else None)
    files = _plan(source, path, precision, engine)
    if files.kind == "module":
        _check_module_args(example, meta)
    files.guard(parity, engine)
    if path is not None and Path(path).suffix != ".onnx":
        # as quantize's --out: a slip of the hand must not overwrite an image or a document with a graph
        raise CompressError(f"--onnx must name an .onnx file, got {path}")
    profile = _preflight(files, engine)
    batch = _onnx_batch(onnx, profile, example)
    from compress.atomic import signals_as_exceptions
    from compress.lock import output_lock

    report: dict = {}
    try:
        with signals_as_exceptions(), output_lock(files.primary, "compress export", directory=False):
            if precision == "int8":
                engine_onnx, wanted = files.source, "int8"
            else:
                engine_onnx, wanted = _write_onnx(files, report, _Shape(onnx, batch, example, meta), parity, log)
            if engine is not None:
                report["engine"] = _build(engine_onnx, engine, profile, wanted, log)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a failed write (a full disk, read-only)
        line = write_failure(exc, files.primary)
        if line is None:
            raise
        raise CompressError(line) from None
    return report


# --- what is written where ------------------------------------------------------------------------------

@dataclass
class _Files:
    source: Any  # nn.Module or Path
    kind: str  # "module", "dir" or "onnx"
    precision: str
    fp32: Path | None  # the FP32 ONNX: written here (module, dir) or the source (onnx)
    fp16: Path | None  # the FP16 ONNX written here
    primary: Path  # the output whose lock is held
    path: Path | None  # the ONNX file asked for
    written: list = field(default_factory=list)  # (label, path) of the ONNX files written here

    def guard(self, parity: Parity | None, engine: Engine | None) -> None:
        """Every output against every input, before any work: nothing may overwrite an input."""
        from compress.guard import check_outputs

        outputs = list(self.written)
        if engine is not None:
            from compress.exporting.engine_sidecar import sidecar_path

            outputs += [("--trt", engine.path), ("the engine sidecar", sidecar_path(engine.path))]
            if engine.timing_cache is not None:
                outputs.append(("--timing-cache", Path(engine.timing_cache)))
        inputs = []
        if self.kind != "module":
            inputs.append(("--int8" if self.precision == "int8" else "SOURCE", self.source))
        if parity is not None and parity.data and (self.kind != "onnx" or self.fp16 is not None):
            from compress.data.options import data_source

            source = data_source(parity.data)
            if source is not None:
                inputs.append(("--data", source))
        check_outputs(inputs=inputs, outputs=outputs)


def _plan(source, path, precision: str, engine: Engine | None) -> _Files:
    """Where the FP32 and FP16 files go (the requested name holds the requested precision), refusing
    combinations that cannot be made."""
    path = Path(path) if path is not None else None
    if path is None and engine is None:
        raise CompressError("give an ONNX path, an engine, or both")
    for label, p in (("--onnx", path), ("--trt", engine.path if engine else None)):
        if p is not None and Path(p).is_dir():
            raise CompressError(f"{label} {p} is a directory; give a file name")
    if isinstance(source, (str, os.PathLike)):
        source = Path(source)
        kind = "onnx" if source.suffix == ".onnx" else "dir"
    else:
        import torch

        if not isinstance(source, torch.nn.Module):
            raise CompressError(f"export takes an nn.Module, a model directory or an .onnx file, got "
                                f"{type(source).__name__}")
        kind = "module"
    primary = path or Path(engine.path)
    if precision == "int8":
        if kind != "onnx" or path is not None or engine is None:
            raise CompressError("an INT8 engine is built from a Q/DQ ONNX file alone (compress.quantize): give "
                                "that file as the source, an engine, and no ONNX path")
        return _Files(source, kind, precision, None, None, primary, path)
    fp16 = precision == "fp16"
    if kind == "onnx":
        if path is not None and not fp16:
            raise CompressError("the source is already ONNX: writing an ONNX file from it needs precision 'fp16'")
        fp16_path = (path or Path(engine.path).with_suffix(".fp16.onnx")) if fp16 else None
        files = _Files(source, kind, precision, source, fp16_path, primary, path)
    elif path is not None:
        files = _Files(source, kind, precision, path.with_name(path.stem + ".fp32.onnx") if fp16 else path,
                       path if fp16 else None, primary, path)
    else:
        ep = Path(engine.path)
        files = _Files(source, kind, precision, ep.with_suffix(".onnx"), ep.with_suffix(".fp16.onnx") if fp16 else None,
                       primary, path)
    if kind != "onnx":
        files.written.append(("--onnx" if path == files.fp32 else "the FP32 ONNX", files.fp32))
    if files.fp16 is not None:
        files.written.append(("--onnx" if path == files.fp16 else "the FP16 ONNX", files.fp16))
    return files


def _preflight(files: _Files, engine: Engine | None):
    """Cheap checks before minutes of work: a corrupt ONNX source, then a missing TensorRT; the batch profile."""
    from compress.exporting.onnx_file import load_onnx

    if files.kind == "onnx":
        load_onnx(files.source)
    if engine is None:
        return None
    from compress.exporting.tensorrt_build import BatchProfile, import_tensorrt, parse_profile

    import_tensorrt()
    if engine.profile is None or isinstance(engine.profile, BatchProfile):
        return engine.profile
    try:
        return parse_profile(engine.profile)
    except ValueError as exc:
        raise CompressError(str(exc)) from None


def _onnx_batch(shape: OnnxShape, profile, example) -> int:
    """The example (or fixed) batch of the ONNX export."""
    if profile is not None and not shape.dynamic_batch and profile.min != profile.max:
        raise CompressError("a static batch needs one batch size: an engine profile with MIN = OPT = MAX (e.g. 8)")
    if shape.batch is not None:
        if isinstance(shape.batch, bool) or not isinstance(shape.batch, int) or shape.batch < 1:
            raise CompressError(f"the ONNX batch must be a positive integer, got {shape.batch!r}")
        return check_count(shape.batch, MAX_BATCH, "the ONNX batch (--batch)", "MAX_BATCH")
    if profile is not None:
        return profile.opt
    if example is not None and getattr(example, "ndim", 0) == 4:
        return int(example.shape[0])
    return 1


# --- ONNX files -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Shape:
    onnx: OnnxShape
    batch: int
    example: Any
    meta: dict | None


def _write_onnx(files: _Files, report: dict, shape: _Shape, parity: Parity | None, log) -> tuple[Path, str | None]:
    """Write the FP32 and FP16 files under temporary names, check them, rename them; returns the ONNX file
    an engine is built from and the precision it must hold (None: whatever the file holds)."""
    from compress.atomic import staged

    fp16 = files.fp16 is not None
    engine_onnx = files.fp32
    if fp16 and files.kind == "onnx" and files.path is None and _precision(files.source) == "fp16":
        return files.source, None  # already FP16: the engine is built from it as it is
    finals = [p for _, p in files.written]
    lines: list[str] = []
    with staged(finals) as tmps:
        tmp_of = dict(zip(finals, tmps))
        inputs = labels = None
        fp32_file = files.fp32
        if files.kind != "onnx":
            fp32_file = tmp_of[files.fp32]
            inputs, labels, report["onnx"] = _export_fp32(files.source, fp32_file, files.fp32, shape, parity,
                                                          lines.append)
        if fp16:
            report["fp16"] = _make_fp16(fp32_file, tmp_of[files.fp16], files.fp16, (inputs, labels), parity,
                                        lines.append)
            engine_onnx = files.fp16
    for line in lines:
        log(line)
    return engine_onnx, "fp16" if fp16 else None


def _precision(path: Path) -> str:
    from compress.exporting.fp16 import precision_of
    from compress.exporting.onnx_file import load_onnx

    return precision_of(load_onnx(path, check=False))


def _loaded(source, shape: _Shape):
    """(module, model.json-like description, ONNX metadata, the name errors give) of a model directory or a
    module; a classifier's output width is checked against its classes."""
    import torch

    if isinstance(source, Path):
        from compress.artifact import WEIGHTS, file_sha256
        from compress.info import load_checked

        model, meta = load_checked(source)
        where = str(source / "model.json")
        out = _probe(model, meta["input_size"])
        metadata = export_metadata(meta, file_sha256(source / WEIGHTS))
    else:
        model, where = source, type(source).__name__
        out = _probe(model, list(shape.example.shape[1:]))
        meta = _module_meta(model, shape.example, shape.meta or {}, out)
        metadata = export_metadata(meta, state_sha256(model))
    if isinstance(out, torch.Tensor) and isinstance(meta.get("classes"), list):
        from compress.validate import check_output_width

        check_output_width(int(out.shape[-1]), meta["classes"], where)
    return model, meta, metadata, where


def _probe(model, input_size):
    """The model's output on one zero image, in eval mode (a module in training mode is put back)."""
    import torch


    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else "cpu"
    if param is not None and param.dtype != torch.float32:
        raise CompressError(f"{type(model).__name__} holds {param.dtype} weights; export takes a float32 model "
                            "(model.float()), and FP16 comes from precision='fp16' (--fp16)")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(1, *input_size, device=device))
    except Exception as exc:  # noqa: BLE001 - a user's forward: named in one line, not a traceback
        raise CompressError(f"{type(model).__name__}'s forward fails on a {[1, *input_size]} input "
                            f"({type(exc).__name__}: {first_line(exc)})") from None
    finally:
        model.train(was_training)


def _check_module_args(example, meta: dict | None) -> None:
    import torch

    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        raise CompressError("exporting a module needs example: one input batch such as torch.zeros(1, 3, 224, 224)")
    unknown = sorted(set(meta or {}) - {"classes", "mean", "std", "arch"})
    if unknown:
        raise CompressError(f"meta takes classes, mean, std and arch, not {', '.join(unknown)}")


def _module_meta(model, example, given: dict, out) -> dict:
    """model.json's description of a module: what `given` says, defaults for the rest."""
    import torch

    channels = int(example.shape[1])
    classes = given.get("classes")
    if isinstance(classes, tuple):
        classes = list(classes)
    if classes is None and isinstance(out, torch.Tensor) and out.dim() == 2:
        classes = placeholder_names(int(out.shape[-1]))  # a classifier's logits; else none
    return {"classes": classes, "input_size": [int(s) for s in example.shape[1:]],
            "normalization": {"mean": list(given.get("mean", [0.0] * channels)),
                              "std": list(given.get("std", [1.0] * channels))},
            "arch": given.get("arch", type(model).__name__)}


def _export_fp32(source, tmp: Path, out: Path, shape: _Shape, parity: Parity | None, say):
    """Export to `tmp` (which becomes `out` once every check has passed) and check parity on it."""
    from compress.exporting.onnx_export import export_onnx
    from compress.exporting.parity import ACCURACY_TOL, check_parity

    model, meta, metadata, where = _loaded(source, shape)
    opset, dynamic = shape.onnx.opset, shape.onnx.dynamic_batch
    try:
        export_onnx(model, tmp, input_size=meta["input_size"], metadata=metadata, opset=opset,
                    dynamic_batch=dynamic, batch=shape.batch)
    except ValueError as exc:  # metadata that can't be right
        raise CompressError(f"{where}: {exc}") from None
    say(f"wrote {out} (fp32, opset {opset}, {'dynamic batch' if dynamic else f'batch {shape.batch}'}, "
        f"{tmp.stat().st_size / 2**20:.1f} MiB)")
    result = {"path": str(out), "opset": opset, "dynamic_batch": dynamic}
    if parity is None:
        return None, None, result
    norm = meta["normalization"]
    inputs, labels, what = _parity_inputs(parity, norm["mean"], norm["std"], meta["input_size"], meta.get("classes"))
    from compress.parity_review import review

    checked = _named(out, tmp, lambda: check_parity(
        model, tmp, inputs, parity.atol, parity.min_agreement, labels=labels,
        accuracy_tol=ACCURACY_TOL if labels is not None else None,
        review=lambda *found: review(model, *found)))
    say(f"parity ONNX Runtime vs torch on {what}: {checked.summary()}")
    return inputs, labels, {**result, "parity_inputs": what, "parity": checked.to_dict()}


def _named(final: Path, tmp: Path, check):
    """Run a check on a temporary file; its errors name the file the user asked for."""
    from compress.exporting.errors import ExportError

    try:
        return check()
    except ExportError as exc:
        raise type(exc)(str(exc).replace(str(tmp), str(final))) from None


def _make_fp16(fp32_path: Path, tmp: Path, fp16_path: Path, checked, parity: Parity | None, say) -> dict:
    from compress.exporting.fp16 import convert_fp16
    from compress.exporting.metadata import checked_metadata
    from compress.exporting.parity import FP16_MIN_AGREEMENT, FP16_REL_TOL, check_parity

    _named(fp16_path, tmp, lambda: convert_fp16(fp32_path, tmp))
    say(f"wrote {fp16_path} (fp16 weights and compute, float32 input/output, {tmp.stat().st_size / 2**20:.1f} MiB)")
    if parity is None:
        return {"path": str(fp16_path)}
    (inputs, labels), what = checked, "the same inputs"
    if inputs is None:
        meta = checked_metadata(fp32_path)
        inputs, labels, what = _parity_inputs(parity, meta["mean"], meta["std"], meta["input_size"],
                                              meta.get("classes"))
    result = _named(fp16_path, tmp, lambda: check_parity(fp32_path, tmp, inputs, min_agreement=FP16_MIN_AGREEMENT,
                                                         rel_tol=FP16_REL_TOL, labels=labels))
    say(f"parity FP16 vs FP32 ONNX on {what}: {result.summary()}")
    return {"path": str(fp16_path), "parity": result.to_dict()}


def _parity_inputs(parity: Parity, mean, std, input_size, classes):
    """Normalized float32 inputs (and labels with data): real test images, or seeded random uint8 images."""
    import numpy as np
    import torch

    from compress.data import load_dataset_for, normalize

    if parity.data:
        data = load_dataset_for(parity.data, "test", input_size, limit=parity.limit)
        if classes is not None:  # the accuracies printed beside the parity are top-1 against these labels
            check_class_names(list(classes), list(data.classes), "the model", "the model")
        if list(data.input_size) != list(input_size):
            raise CompressError(f"{parity.data} images are {list(data.input_size)}, the model takes {list(input_size)}")
        x = normalize(data.eval_images(), mean, std).numpy()
        return x, data.labels.numpy(), f"{len(data)} test images of {parity.data}"
    n = parity.limit or RANDOM_INPUTS
    # uint8 images and their float32 normalized copy (5 bytes a value): refused before torch is asked for them
    check_allocation(n * math.prod(input_size) * 5, "uint8", f"the parity check's {n:,} random images (--parity-limit)")
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *input_size), dtype=torch.uint8, generator=gen)
    return normalize(images, mean, std).numpy().astype(np.float32), None, f"{n} random images"


# --- the engine ---------------------------------------------------------------------------------------------

def _build(onnx_path: Path, engine: Engine, profile, wanted: str | None, log) -> dict:
    from compress.exporting.tensorrt_build import build_engine

    path = Path(engine.path)
    info = build_engine(onnx_path, path, profile=profile, workspace_mb=engine.workspace_mb,
                        timing_cache=engine.timing_cache, opt_level=engine.opt_level, dla_core=engine.dla_core,
                        precision=wanted, verbose=engine.verbose, log=log)
    log(f"wrote {path} ({info['precision']}, {info['engine_size'] / 2**20:.1f} MiB, built in "
        f"{info['build_time_s']:.1f} s on {info['gpu_name']}) and {path.name}.json")
    return {"path": str(path), **info}
