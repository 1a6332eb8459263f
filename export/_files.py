"""File helpers of the export modules: hashing, atomic writes and strict JSON objects are the runtime's
(compress.runtime.file_hash, .atomic, .strict_json), the one implementation for the project, under the
names the export code has always used.
"""

from __future__ import annotations

from compress.runtime.atomic import write_bytes, write_many
from compress.runtime.file_hash import sha256_file
from compress.runtime.strict_json import unique_keys

__all__ = ["atomic_write_bytes", "atomic_write_many", "sha256_file", "unique_keys"]

atomic_write_bytes = write_bytes
atomic_write_many = write_many


