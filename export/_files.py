"""File helpers of the export modules: hashing here; atomic writes and strict JSON objects are the
runtime's (compress.runtime.atomic, compress.runtime.strict_json), the one implementation for the project,
under the names the export code has always used.
"""

from __future__ import annotations

import hashlib
import os

from compress.runtime.atomic import write_bytes, write_many
from compress.runtime.strict_json import unique_keys

__all__ = ["atomic_write_bytes", "atomic_write_many", "sha256_file", "unique_keys"]

atomic_write_bytes = write_bytes
atomic_write_many = write_many


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
