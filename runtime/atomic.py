"""Atomic file writes, the one implementation for the whole project: a failed, interrupted or killed
process never leaves a file under its final name that it did not finish.

It lives in runtime/ because every other room may import runtime/ (which imports none of them);
`compress.atomic` and `compress.exporting._files` re-export it.

* `atomic_path(path)` yields a hidden temporary name beside `path` and renames it into place when the
  block ends without an exception; otherwise the temporary is removed.
* `staged(paths)` does the same for several outputs at once: nothing is renamed until the block has
  finished (every check passed), then all are renamed in the order given (put the file that marks a
  result complete, such as model.json, last). `write_many` writes several byte strings that way.
* `write_files_into(dir, files, marker=...)` writes a set of files into a directory as one unit (a
  benchmark report): all are written in a hidden scratch directory first and moved in, marker last,
  only when every write succeeded.
* `signals_as_exceptions()` turns SIGTERM (and SIGHUP) into `Terminated`, a KeyboardInterrupt, so the
  `finally` clauses above run on `kill` and Ctrl-C alike. kill -9 cannot be caught: it may leave a
  hidden `.NAME.*.tmp` file, never a final name.
* `write_problem(exc, where)` names a failed write in one line: disk full, read-only, not writable.
  `check_writable_dir(dir)` finds that out before the work whose result would be written.
* `remove_leftovers(dir, finals)` removes what a kill -9 left (hidden temporaries), under the folder's lock.

Files get the permissions of a normally created file (0666 less the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

TMP_SUFFIX = ".tmp"
PARTIAL_SUFFIX = ".partial"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; raised so that cleanup code runs as it does for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise `Terminated` (SIGINT already raises
    KeyboardInterrupt). Nested use is fine; outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        current = signal.getsignal(sig)
        if current is _raise_terminated:
            continue
        previous[sig] = current
        signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def os_error_line(exc: OSError, where: str | os.PathLike) -> str:
    """One line for a failed read or write: the file at fault (or `where`) and the system's reason."""
    name = exc.filename if exc.filename is not None else where
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot write {name}: {reason}"


def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def dir_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def temp_name(path: str | os.PathLike, suffix: str = TMP_SUFFIX) -> Path:
    """A fresh hidden name beside `path` (created empty, so it is ours alone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and (name.endswith(TMP_SUFFIX) or name.endswith(PARTIAL_SUFFIX))


# mkstemp's names: the prefix ".NAME.", 8 random characters, the suffix.
_TEMP = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}(?:\.tmp|\.partial)$")


def final_name(path: str | os.PathLike) -> str:
    """The name a temporary stands for, for messages: `DIR/.NAME.x1y2z3w4.tmp` is DIR/NAME, and a file
    inside a hidden `.NAME.x1y2z3w4.partial` folder is the file that lands beside that folder."""
    parts = [part for part in Path(path).parts if not (_TEMP.match(part) and part.endswith(PARTIAL_SUFFIX))]
    if parts and (match := _TEMP.match(parts[-1])):
        parts[-1] = match.group("name")
    return str(Path(*parts)) if parts else str(path)


def remove_leftovers(folder: str | os.PathLike, finals: Callable[[str], bool]) -> list[str]:
    """Remove the temporaries that a killed writer left in `folder` (kill -9 runs no cleanup) for the final
    names `finals` accepts; returns their names. Call it only while holding the folder's write lock: no
    other writer of those names is then at work."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or not finals(match.group("name")):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        removed.append(entry.name)
    return removed


def _finish(tmp: Path) -> None:
    """Durable contents and normal permissions before the rename makes the file visible."""
    if tmp.is_file():
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same directory; rename it onto `path` on success."""
    with staged([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def staged(paths: Iterable[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary names for several output files, renamed onto their final names (in order) only when the
    block ends normally, after the old files of all but the first name are removed (so a stop between the
    renames never leaves an old file beside a new one; a reader may find a later name missing meanwhile).
    On an exception, Ctrl-C or SIGTERM inside the block every temporary is removed and no final name is
    touched. The temporaries exist (empty) on entry; writers may replace them."""
    finals = [Path(p) for p in paths]
    if len({os.path.realpath(p) for p in finals}) != len(finals):
        raise ValueError(f"two outputs share one name: {', '.join(map(str, finals))}")
    tmps: list[Path] = []
    with signals_as_exceptions():
        try:
            for final in finals:
                tmps.append(temp_name(final))
            yield list(tmps)
            for tmp in tmps:
                _finish(tmp)
            for final in finals[1:]:
                # An earlier run's later files go first: a kill between the renames below then leaves new
                # files without their marker, never beside the old one (a report of another model).
                if final.is_symlink() or final.is_file():
                    final.unlink()
            for tmp, final in zip(tmps, finals):
                os.replace(tmp, final)
            for parent in {f.parent for f in finals}:
                _fsync_dir(parent)
        finally:
            for tmp in tmps:
                if tmp.exists():
                    _remove(tmp)


@contextlib.contextmanager
def scratch_dir(beside: str | os.PathLike) -> Iterator[Path]:
    """A hidden working directory beside `beside` (same file system, so results can be renamed out of
    it), removed on every exit: success, failure, Ctrl-C or SIGTERM."""
    with signals_as_exceptions():
        tmp = _hidden_dir(Path(beside))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _hidden_dir(beside: Path, infix: str = "") -> Path:
    """A new hidden `.NAME.*.partial` directory beside `beside`, its parents made first."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{beside.name}.{infix}", suffix=PARTIAL_SUFFIX, dir=beside.parent))


def _write_all(fd: int, data) -> None:
    """Every byte of `data` (bytes or any contiguous buffer) to `fd`: os.write may write less than asked."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _write_new_file(path: Path, data) -> None:
    """Create `path` (it must not exist) with normal permissions and durable contents."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode())
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _overwrite(tmp: Path, data) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data) -> Path:
    """Write `data` (bytes or any contiguous buffer) atomically to `path`; returns `path`."""
    with atomic_path(path) as tmp:
        _overwrite(tmp, data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_many(items: Iterable[tuple[str | os.PathLike, Any]]) -> list[Path]:
    """Write several (path, data) pairs to temporaries first, then rename them in the order given: a
    failure while writing leaves none of them at its final name."""
    items = [(Path(p), data) for p, data in items]
    with staged([p for p, _ in items]) as tmps:
        for tmp, (_, data) in zip(tmps, items):
            _overwrite(tmp, data)
    return [p for p, _ in items]


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    # One line appended and flushed; a crash can lose at most the last line, never corrupt earlier ones.
    with open(path, "a") as fh:
        fh.write(json.dumps(obj) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place only when complete.

    An existing directory at `path` is moved aside first and removed only after the new one is in
    place, so an interruption leaves the old directory (possibly under a hidden name) or the new one,
    never a half-built one under the final name."""
    path = Path(path)
    with signals_as_exceptions():
        tmp = _hidden_dir(path)
        try:
            yield tmp
            os.chmod(tmp, dir_mode())
            old = _hidden_dir(path, "old.") if path.exists() else None
            if old is not None:
                os.replace(path, old)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def move_into(work: str | os.PathLike, out: str | os.PathLike, marker: str = "model.json") -> list[Path]:
    """Move every file that `work` holds into `out` by rename (both on one file system).

    `marker` (the file whose presence says a directory is complete) is removed from `out` first and moved
    in last, so at every instant `out` is either marked complete with the old files or unmarked; a kill -9
    in the middle leaves an unmarked directory that the next run redoes. Returns the final paths.
    """
    work, out = Path(work), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in work.iterdir() if not is_temp_name(p.name))
    names.sort(key=lambda n: n == marker)
    (out / marker).unlink(missing_ok=True)
    moved = []
    for name in names:
        src = work / name
        if src.is_dir():
            raise ValueError(f"move_into moves files only; {src} is a directory")
        if src.is_file():
            os.chmod(src, file_mode())
        os.replace(src, out / name)
        moved.append(out / name)
    _fsync_dir(out)
    return moved


def write_files_into(out_dir: str | os.PathLike, files: Mapping[str, Any], *, marker: str,
                     stale: Iterable[str] = ()) -> list[Path]:
    """Write {name: data} into `out_dir` as one unit, `marker` (which must be among them) being the file
    that says the set is complete.

    Every file is first written in a hidden scratch directory inside `out_dir` (same file system). Only
    when all writes succeeded are they moved in by rename, the old marker removed first and the new one
    moved last; names in `stale` (files of an earlier set that this one lacks) are removed. A failure
    (disk full, read-only, a signal) leaves `out_dir` as it was, and a directory this call created is
    removed again. Other files in `out_dir` are never touched."""
    out_dir = Path(out_dir)
    if marker not in files:
        raise ValueError(f"the marker {marker!r} is not among the files to write")
    for name in files:
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"{name!r} is not a plain file name")
    # the folders this call creates, deepest first: a failed write removes them all again
    created = [p for p in [out_dir, *out_dir.parents] if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with scratch_dir(out_dir / marker) as work:
            for name, data in files.items():
                try:
                    _write_new_file(work / name, data)
                except OSError as exc:
                    exc.filename = str(out_dir / name)
                    raise
            for name in set(stale) - set(files):
                if not is_temp_name(name) and Path(name).name == name:
                    (out_dir / name).unlink(missing_ok=True)
            return move_into(work, out_dir, marker=marker)
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only when empty: nothing of ours is left to keep
            except OSError:
                break
        raise


def check_writable_dir(out_dir: str | os.PathLike) -> None:
    """Raise OSError (for `write_problem`) unless a file can be created in `out_dir`, or in the nearest folder
    above it that exists when it does not: a long measurement should not end in a write that was never
    possible. Creates and removes one hidden empty file; creates no folder."""
    out_dir = Path(out_dir)
    place = next((p for p in [out_dir, *out_dir.parents] if p.exists() or p.is_symlink()), Path("."))
    if not place.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(place))
    try:
        fd, probe = tempfile.mkstemp(prefix=".compress-write-check-", suffix=TMP_SUFFIX, dir=place)
    except OSError as exc:
        exc.filename = str(place)  # the folder the user gave, not the name of the probe
        raise
    os.close(fd)
    os.unlink(probe)


def write_problem(exc: OSError, where: str | os.PathLike) -> str:
    """One line naming why a write into `where` (a file or directory) failed: the disk is full, the place
    is read-only or not writable, a file-size limit; otherwise the system's reason."""
    name = exc.filename if exc.filename is not None else where
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {name} ({reason})"
    if exc.errno == errno.EFBIG:
        return f"file too large while writing {name} (a file-system or process file-size limit: {reason})"
    if exc.errno == errno.EROFS:
        return f"{where} is read-only ({reason})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{where} is not writable ({reason})"
    return f"cannot write {name}: {reason}"
