"""Files someone else may have made (ONNX files, engines, sidecars, model.json, reports), checked before
anything opens or parses them.

A FIFO would block a reader forever and a device such as /dev/zero never ends, so only regular files are
accepted, and their size is bounded before a byte is read. `check_regular_file` is for paths handed to a
library that opens them itself (ONNX Runtime, OpenVINO, onnx.load); `read_regular_file` reads the bytes
itself and checks the opened file again (the path could have been swapped in between).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from compress.runtime.errors import InputFileError

# protobuf cannot parse a message above 2 GiB: a larger .onnx file keeps its weights as external data.
MAX_ONNX_BYTES = 2 * 1024**3
# A serialized TensorRT plan of a CNN is tens to hundreds of MB; 8 GiB leaves room for any vision model.
MAX_ENGINE_BYTES = 8 * 1024**3


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _check(st: os.stat_result, path: Path, what: str, max_bytes: int | None) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{what} {path} is {_kind(st.st_mode)}, not a regular file; refusing to read it")
    if max_bytes is not None and st.st_size > max_bytes:
        raise InputFileError(f"{what} {path} is {size_text(st.st_size)}, above the bound of {size_text(max_bytes)} "
                             "for this kind of file")


def check_regular_file(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> int:
    """The size of `path` after checking, without opening it, that it is a regular file of at most
    `max_bytes` (symbolic links are followed). Raises InputFileError in one line otherwise."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputFileError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    _check(st, path, what, max_bytes)
    return st.st_size


def read_regular_file(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_ONNX_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; anything else is refused before it is read."""
    path = Path(path)
    check_regular_file(path, what, max_bytes)
    try:
        # O_NONBLOCK: were the path swapped for a FIFO after the check above, opening it must not block.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        _check(os.fstat(fd), path, what, max_bytes)
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 24, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise InputFileError(f"{what} {path} grew above the bound of {size_text(max_bytes)} while being read")
    return b"".join(chunks)
