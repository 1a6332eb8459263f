"""What a dataset holds, as one hash that the resume checks compare: a run resumed, or a finished stage kept,
on other images or labels than it was trained on would mix two datasets in one result without a word.

A folder's hash covers every image's path under it and its size (an image moved to another class folder
changes it; a copy of the folder elsewhere, touched files, or a README added beside do not). An archive's covers its size and
its first and last MiB. A run computes it once (DataOptions keeps it with the images it loaded).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from compress.data.sources import is_image_name

EDGE_BYTES = 1 << 20


def data_fingerprint(source: Path) -> str:
    from compress.limits import regular_file

    regular_file(source, "dataset", directory_ok=True)  # a FIFO would block the first read forever
    return _folder(source) if source.is_dir() else _archive(source)


def _folder(root: Path) -> str:
    entries = []
    seen = set()
    # Linked split and class folders are followed, as the loader follows them; a loop is walked once.
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        for name in files:
            if not is_image_name(name):  # what the loader reads: a README or Thumbs.db added later is not data
                continue
            try:
                size = os.stat(os.path.join(folder, name)).st_size
            except OSError:
                size = -1  # a dangling link: the loader names it; here it is part of what the folder holds
            entries.append(f"{rel}/{name}|{size}")
    digest = hashlib.sha256()
    for line in sorted(entries):
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return "folder:" + digest.hexdigest()[:32]


def _archive(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(EDGE_BYTES))
        if size > 2 * EDGE_BYTES:
            fh.seek(size - EDGE_BYTES)
        digest.update(fh.read(EDGE_BYTES))
    return "file:" + digest.hexdigest()[:32]


def as_recorded(current: dict, recorded: dict) -> dict:
    """`current` settings as `recorded` would have written them for the same data: without the fingerprint
    when the record predates fingerprints (a stage from an older version is compared on what it recorded),
    and with the recorded spec when the fingerprints agree (`--data imgs` and `--data /abs/imgs`, or a copy
    of the folder, are the same images)."""
    data, old = current.get("data"), recorded.get("data")
    if not (isinstance(data, dict) and isinstance(old, dict) and "fingerprint" in data):
        return current
    if "fingerprint" not in old:
        return {**current, "data": {k: v for k, v in data.items() if k != "fingerprint"}}
    if data["fingerprint"] is not None and data["fingerprint"] == old["fingerprint"] and "spec" in old:
        return {**current, "data": {**data, "spec": old["spec"]}}
    return current
