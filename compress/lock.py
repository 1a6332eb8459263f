"""One writer per output: an advisory lock file held while a command writes.

`output_lock(path, command)` takes an exclusive `fcntl.flock` on `DIR/.lock` (for an output directory)
or `.NAME.lock` beside an output file, and writes the holder's pid, command and start time into it.
A second writer fails at once with one line naming the holder. The kernel drops the lock when the
holder exits, so a killed run (kill -9 included) never leaves a stale lock: the file may remain, the
lock does not. The lock file is removed on release, which is safe because a taker checks that the file
it locked is still the one at the path.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator

from compress.errors import CompressError

LOCK_NAME = ".lock"


class LockedError(CompressError):
    """Another process is writing the same output."""


def lock_path(path: str | os.PathLike, directory: bool | None = None) -> Path:
    """DIR/.lock for an output directory, .NAME.lock beside an output file (a guess from the name
    when `directory` is None: an existing directory or a name without a suffix is a directory)."""
    path = Path(path)
    if directory is None:
        directory = path.is_dir() or not path.suffix
    if directory:
        return path / LOCK_NAME
    return path.with_name(f".{path.name}.lock")


def holder(target: Path) -> dict | None:
    """What the lock file says about its holder, or None when it is absent or unreadable."""
    try:
        info = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    return f"pid {info.get('pid')} ({info.get('command') or 'compress'}, since {info.get('started')})"


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; one that holds files stays
        try:
            folder.rmdir()
        except OSError:
            return


def _cannot_write(path, exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else path
    return f"cannot write {path}: {exc.strerror or exc} ({where})"


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, command: str | None = None,
                directory: bool | None = None) -> Iterator[Path]:
    """Hold the write lock of the output `path` for the duration of the block (see lock_path)."""
    target = lock_path(path, directory)
    # The folders this lock creates, deepest first: a run that wrote nothing removes them all again.
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    try:
        # The lock is every command's first write: a read-only or full output folder is named here, in
        # one line, before any work.
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompressError(_cannot_write(path, exc)) from None
    while True:
        try:
            fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            _remove_empty(created)
            raise CompressError(_cannot_write(path, exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"{path} is being written by {_describe(holder(target))}; wait for it to finish "
                              "or choose another output") from None
        except OSError as exc:
            os.close(fd)
            raise LockedError(f"cannot lock {target}: {exc.strerror}") from None
        # The previous holder may have removed the file between our open and our lock: retry on the new one.
        try:
            same = os.fstat(fd).st_ino == os.stat(target).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "command": command,
                "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
        except OSError as exc:
            raise CompressError(_cannot_write(path, exc)) from None
        yield target
    finally:
        with contextlib.suppress(OSError):
            os.unlink(target)
        os.close(fd)
        _remove_empty(created)  # a run that wrote nothing leaves no empty directory behind
