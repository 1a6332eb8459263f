"""No output may overwrite an input, or a file that belongs to one.

Commands call `check_outputs` before doing any work. Paths are compared after resolving symlinks
(and, for existing files, by device and inode, which also catches hard links), so `--out ./m/../m`
or a link to the source is refused like the source itself. Writing a *new* file beside an input
(`runs/x/finetuned/model.onnx`) stays allowed.

Inputs must be regular files or directories (compress.limits.regular_file): a FIFO given as --plan
or --data would block forever and /dev/zero would be read forever, so both are refused here, before
anything opens them. An output that exists must be a regular file (or, for an output directory, a
directory): `--out /dev/null` is refused rather than renamed over.

What belongs to an input:
* a file input: the file itself;
* a model directory (holds model.json or model.safetensors): the files listed in MODEL_DIR_FILES;
* any other directory (an ImageFolder dataset, say): every file already inside it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

from compress.errors import CompressError

PathLike = Union[str, os.PathLike]
# The files that make up a model directory (docs/ARTIFACTS.md) plus the outputs written into one.
MODEL_DIR_FILES = ("model.safetensors", "model.json", "plan.json", "metrics.jsonl", "model.dcz",
                   "share_report.json", "share_report.md", "train_state")
MODEL_DIR_MARKERS = ("model.json", "model.safetensors")


class OutputOverlapError(CompressError):
    """An output would overwrite an input or one of its files."""


def _real(path: PathLike) -> Path:
    # realpath resolves every symlink it can and keeps a missing tail as written.
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _identity(path: Path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _labelled(items) -> list[tuple[str | None, Path]]:
    if items is None:
        return []
    if isinstance(items, (str, os.PathLike)):
        items = [items]
    if isinstance(items, dict):
        items = list(items.items())
    out = []
    for item in items:
        if isinstance(item, tuple):
            label, path = item
        else:
            label, path = None, item
        if path is not None:
            out.append((label, Path(path)))
    return out


def is_model_dir(path: PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and any((path / m).exists() for m in MODEL_DIR_MARKERS)


def _protected(inputs: list[tuple[str | None, Path]]):
    """(resolved protected path, phrase naming it) for the inputs and the files that belong to them,
    and (resolved directory, phrase) for plain directories whose existing files all belong to them."""
    files, trees = [], []
    for label, given in inputs:
        real = _real(given)
        name = _describe(label, given)
        if real.is_dir():
            if is_model_dir(real):
                files.append((real, f"the input model directory {name}"))
                for member in MODEL_DIR_FILES:
                    files.append((real / member, f"{member} of the input model directory {name}"))
            else:
                files.append((real, f"the input directory {name}"))
                trees.append((real, f"a file of the input directory {name}"))
        else:
            files.append((real, f"the input {name}"))
    return files, trees


def _describe(label: str | None, path: Path) -> str:
    return f"{label} {path}" if label else str(path)


def check_outputs(inputs: Iterable = (), outputs: Iterable = (), out_dirs: Iterable = (),
                  dir_files: Iterable[str] = MODEL_DIR_FILES) -> None:
    """Refuse (OutputOverlapError, one line) any output that is, or would overwrite, an input.

    `inputs`: files and directories the command reads (model directories, ONNX files, datasets).
    `outputs`: files the command writes. `out_dirs`: directories it writes `dir_files` into.
    Each of the three takes paths, (label, path) pairs or a {label: path} dict; labels such as
    "--out" name the option in the message. Two outputs resolving to one file are refused as well.
    """
    inputs, outputs, out_dirs = _labelled(inputs), _labelled(outputs), _labelled(out_dirs)
    _check_kinds(inputs, outputs, out_dirs)
    protected, trees = _protected(inputs)
    by_path = dict(protected)
    by_identity = {}
    for p, phrase in protected:
        ident = _identity(p)
        if ident is not None:
            by_identity.setdefault(ident, phrase)

    def clash(path: Path):
        real = _real(path)
        if real in by_path:
            return by_path[real]
        ident = _identity(real)
        if ident is not None and ident in by_identity:
            return by_identity[ident]
        for tree, phrase in trees:
            if ident is not None and real.is_relative_to(tree):
                return phrase
        return None

    advice = "choose another output (an output must never overwrite an input)"
    candidates: list[tuple[str | None, Path, Path]] = []  # (label, as given, file that will be written)
    for label, path in outputs:
        candidates.append((label, path, path))
    for label, d in out_dirs:
        hit = clash(d)
        if hit is not None:  # the directory is an input, or a file of one
            raise OutputOverlapError(f"{_describe(label, d)} is {hit}: {advice}")
        for name in dir_files:
            candidates.append((label, d, d / name))
    seen: dict[Path, tuple[str | None, Path]] = {}
    for label, given, target in candidates:
        hit = clash(target)
        if hit is not None:
            where = "" if target == given else f" (its {target.name})"
            raise OutputOverlapError(f"{_describe(label, given)}{where} would overwrite {hit}: {advice}")
        real = _real(target)
        if target == given and real in seen:
            other_label, other = seen[real]
            raise OutputOverlapError(f"{_describe(label, given)} and {_describe(other_label, other)} "
                                     "name the same file")
        seen.setdefault(real, (label, given))


def _check_kinds(inputs, outputs, out_dirs) -> None:
    """Existing inputs are regular files or directories; existing outputs are what they will be replaced
    with. Missing inputs are left to the command, which words "not found" in its own terms."""
    from compress.limits import NotRegularFileError, kind_of, regular_file

    for label, path in inputs:
        if os.path.exists(path):
            regular_file(path, label or "the input", directory_ok=True)
    for label, path in outputs:
        if os.path.exists(path) and not os.path.isdir(path):
            regular_file(path, label or "the output")
    for label, path in out_dirs:
        if os.path.exists(path):
            mode = os.stat(path).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):  # a regular file is refused by the command
                raise NotRegularFileError(f"{_describe(label, Path(path))} is {kind_of(mode)}, not a directory")


@dataclass
class GuardedOutputs:
    work: Path               # a hidden scratch directory beside the first output, removed at the end
    tmp: dict[Path, Path]    # final path -> temporary path; renamed when the block ends normally


@contextlib.contextmanager
def guarded_outputs(inputs: Iterable = (), outputs: Iterable = (), *, command: str | None = None
                    ) -> Iterator[GuardedOutputs]:
    """Everything a command that writes files needs, in one block:

    * `check_outputs(inputs, outputs)` before any work;
    * the output lock of the first output (a second writer gets one line naming this one);
    * SIGTERM/SIGHUP raised as exceptions, so cleanup runs on kill as on Ctrl-C;
    * a scratch directory for intermediates (an FP32 export, calibration files), always removed;
    * a temporary name per output, renamed in the order given only if the block ends normally.

        with guarded_outputs([("MODEL", src)], [("--out", out), ("the report", report)],
                             command="compress quantize") as job:
            fp32 = job.work / "fp32.onnx"          # never OUT.fp32.onnx beside the output
            ...                                    # write job.tmp[out] and job.tmp[report], check them
        # here both exist under their final names, or neither does (a kill -9 between the two renames
        # leaves the new file alone: the old report is removed before them)
    """
    from compress.atomic import scratch_dir, signals_as_exceptions, staged
    from compress.errors import write_failure
    from compress.lock import output_lock

    labelled = _labelled(outputs)
    check_outputs(inputs=inputs, outputs=labelled)
    if not labelled:
        raise ValueError("guarded_outputs needs at least one output")
    finals = [p for _, p in labelled]
    with signals_as_exceptions(), output_lock(finals[0], command, directory=False):
        try:
            with scratch_dir(finals[0]) as work, staged(finals) as tmps:
                yield GuardedOutputs(work=work, tmp=dict(zip(finals, tmps)))
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is a failed write
            line = write_failure(exc, finals[0])
            if line is None:
                raise
            raise CompressError(line) from None
