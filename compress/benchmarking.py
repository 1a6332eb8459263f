"""Benchmark artifacts, model directories included: the library side of `compress bench`.

`compress.runtime.bench.run_benchmark` measures files (.onnx, .engine) and is torch-free. This module adds
what needs the training side, only when it is used: a model directory given to an ONNX backend is
exported to a temporary ONNX file first (torch), and `data_spec` loads labelled test images
through compress.data (torch). Benchmarking ONNX files without --data imports no torch.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Callable

from compress.errors import CompressError, one_error_class

EXPORT_NOTE = "model directory exported to a temporary ONNX file (opset 17, dynamic batch) for {backends}"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_paths(artifacts) -> None:
    """A path that is not there, or is neither a regular file nor a folder (a FIFO, a device), is bad
    input: one line before any work. A file that is there but cannot be run is measured as a failed row,
    beside the others."""
    from compress.runtime.input_files import InputFileError, check_regular_file

    for a in artifacts:
        path = Path(a)
        if not path.exists():
            if path.is_symlink():
                raise CompressError(f"{a}: a symbolic link to nothing (or a loop of links)")
            raise CompressError(f"{a}: no such file or model directory")
        if not path.is_dir():
            try:
                check_regular_file(path, "artifact")
            except InputFileError as exc:
                raise CompressError(str(exc)) from None


@one_error_class
def bench_artifacts(artifacts: list[str | Path], settings, *, backends: list[str] | None = None,
                    data_spec: str | None = None, test_limit: int | None = None,
                    model_dirs: dict[str, str | Path] | None = None, command: str | None = None,
                    log: Callable[[str], None] = _stderr) -> dict:
    """Benchmark .onnx/.engine files and model directories on one or more backends; returns the report.

    `settings` is a runtime.bench.BenchSettings. Model directories become temporary ONNX files for
    the ONNX backends (ort-*, openvino*); their rows keep the directory as the artifact and say so.
    A failed export becomes that artifact's failed row. Raises CompressError for a backend or power source
    this machine lacks, or arguments of the wrong kind; BenchSettings itself refuses an unknown backend or a
    count out of bounds when it is made (a ValueError).
    """
    from compress.runtime.bench import BenchSettings, resolve_power, run_benchmark
    from compress.runtime.errors import RuntimeBenchError
    from compress.runtime.runners import ONNX_BACKENDS, check_backend

    for what, given in (("artifacts", artifacts), ("backends", backends)):
        if isinstance(given, (str, Path)):  # a string would be read as a list of one-letter names
            raise CompressError(f"{what} is a list, got the single {type(given).__name__} {str(given)!r}: "
                                f"pass [{str(given)!r}]")
    if not isinstance(settings, BenchSettings):
        raise CompressError(f"settings must be a compress.BenchSettings, got a {type(settings).__name__}")
    if not artifacts:
        raise CompressError("no artifacts to benchmark")
    if settings.paired_blocks and len(artifacts) < 2:
        raise CompressError("paired_blocks compares artifacts with the first one: give at least two")
    backends = list(dict.fromkeys(backends or [settings.backend]))
    try:
        for b in backends:
            check_backend(b)
        resolve_power(settings, backends)  # a --power source this machine lacks, before any export or data
    except (RuntimeBenchError, ValueError) as exc:
        raise CompressError(str(exc)) from None
    _check_paths(artifacts)
    onnx_backends = [b for b in backends if b in ONNX_BACKENDS]
    if onnx_backends and len(onnx_backends) != len(backends):
        raise CompressError(f"backends {', '.join(backends)} run different kinds of artifact; benchmark ONNX "
                            "backends (ort-*, openvino*) and trt/torch backends in separate runs")
    model_dirs = {str(Path(k)): Path(v) for k, v in (model_dirs or {}).items()}
    data = load_eval_data(data_spec, test_limit, log, input_size=_sized_for(artifacts)) if data_spec else None
    with tempfile.TemporaryDirectory(prefix="compress-bench-") as tmp:
        paths, names, exported, errors = _runnable_paths(artifacts, bool(onnx_backends), Path(tmp), model_dirs, log)
        report = run_benchmark(paths, settings, data=data, model_dirs=model_dirs, names=names, command=command,
                               log=log, backends=backends)
    per_artifact = len(backends)
    for i, v in enumerate(report["variants"]):
        k = i // per_artifact
        if k in exported:
            v["artifact"] = str(exported[k])
            v["note"] = EXPORT_NOTE.format(backends=", ".join(onnx_backends))
        if k in errors:
            v["status"], v["error"], v["latency"] = "failed", errors[k], []
    return report


def _sized_for(artifacts) -> list[int] | None:
    """`_input_size`, refused in one line naming the artifact when --data's images cannot be sized to it."""
    from compress.data.sizing import MAX_INPUT, MIN_INPUT

    size, artifact = _first_size(artifacts)
    if size is not None and not all(MIN_INPUT <= d <= MAX_INPUT for d in size[1:]):
        raise CompressError(f"{artifact} takes {size[1]}x{size[2]} images (its input_size); --data's images can be "
                            f"sized to {MIN_INPUT} to {MAX_INPUT} pixels a side for accuracy")
    return size


def _input_size(artifacts) -> list[int] | None:
    """[C, H, W] the first artifact takes, from its model.json or ONNX metadata (None when unknown). Runs
    before the artifacts are checked, so it reads them bounded and skips anything odd: the check that
    follows names what is wrong with them."""
    return _first_size(artifacts)[0]


def _first_size(artifacts) -> tuple[list[int] | None, object]:
    """`_input_size`, with the artifact it came from."""
    import json

    from compress.limits import MAX_IMAGE_SIDE, read_json
    from compress.runtime.external_data import load_graph

    for artifact in artifacts:
        path = Path(artifact)
        try:
            if (path / "model.json").is_file():
                size = read_json(path / "model.json").get("input_size")
            elif path.suffix == ".onnx":
                props = {p.key: p.value for p in load_graph(path).metadata_props}
                size = json.loads(props.get("compress.input_size", "null"))
            else:
                continue
        except Exception:  # noqa: BLE001 - bounds, bad JSON, a damaged protobuf: the artifact check says which
            continue
        if isinstance(size, list) and len(size) == 3 and all(type(d) is int and 0 < d <= MAX_IMAGE_SIDE for d in size):
            return size, artifact
    return None, None


def load_eval_data(data_spec: str, test_limit: int | None, log: Callable[[str], None] = _stderr,
                   input_size: list[int] | None = None):
    """Labelled uint8 test images for accuracy (compress.data: needs the [train] extra), sized for the
    artifacts' `input_size` when given."""
    from compress.runtime.bench import EvalData

    try:
        from compress.data import load_dataset, load_dataset_for
    except ImportError as exc:
        raise CompressError(f"--data needs the training side ({exc.name or exc}): "
                            'pip install "cnn-compress[train]"') from None
    loaded = (load_dataset_for(data_spec, "test", input_size, limit=test_limit) if input_size
              else load_dataset(data_spec, "test", limit=test_limit))
    data = EvalData(loaded.eval_images().numpy(), loaded.labels.numpy(), list(loaded.classes), data_spec)
    log(f"accuracy on {len(data.labels)} test images of {data_spec}")
    return data


def _runnable_paths(artifacts, export_dirs: bool, tmp: Path, model_dirs: dict, log):
    """Paths the backends run and display names; model directories become temporary ONNX files when
    `export_dirs`. Also returns {index: model directory} for the exported ones and {index: error}."""
    from compress.runtime.bench import unique_name

    paths, names = [], []
    exported: dict[int, Path] = {}
    errors: dict[int, str] = {}
    taken: set[str] = set()
    for artifact in map(Path, artifacts):
        name = unique_name(artifact, taken)  # two artifacts never share a row name, nor a paired row
        taken.add(name)
        names.append(name)
        if export_dirs and artifact.is_dir() and (artifact / "model.json").is_file():
            try:
                onnx_path = export_model_dir(artifact, tmp / f"{len(paths)}-{artifact.name}.onnx", log)
            except Exception as exc:  # noqa: BLE001 - the variant becomes a failed row, not a crash
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                errors[len(paths)] = f"export to ONNX failed: {first}"
                log(f"{artifact}: {errors[len(paths)]}")
                paths.append(artifact)
                continue
            model_dirs.setdefault(str(onnx_path), artifact)
            exported[len(paths)] = artifact
            paths.append(onnx_path)
        else:
            paths.append(artifact)
    return paths, names, exported, errors


def export_model_dir(model_dir: Path, out: Path, log: Callable[[str], None] = _stderr) -> Path:
    """FP32 ONNX of a model directory with the documented metadata (needs the [train] extra), through
    compress.export. The file is benchmarked and deleted: it is not parity-checked, and its accuracy is
    measured on the file itself when --data is given."""
    from compress.stages.export import export

    export(model_dir, out, check=False, log=lambda _msg: None)
    log(f"{model_dir}: exported to a temporary ONNX file")
    return Path(out)
