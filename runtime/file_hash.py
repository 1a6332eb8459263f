"""sha256 of a file, read in 1 MiB blocks: the one implementation behind the weights hash of a model
directory (compress.artifact), the hashes export records (compress.exporting) and the match of a
model.json to an artifact (model_json_match)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
