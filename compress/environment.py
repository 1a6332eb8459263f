"""The environment variables that change what the toolkit does, read in one place so that a mistyped value
is refused in one line before any work starts (the CLI checks them all first), not ignored.

| variable | what it sets |
| --- | --- |
| ``COMPRESS_DATA`` | the local copy that the ``cifar10`` data name means (compress.data.load) |
| ``COMPRESS_DATA_DIR`` | where torchvision's CIFAR copies are downloaded (default: the cache below) |
| ``COMPRESS_CACHE`` | the decoded-image cache (default ``~/.cache/compress``) |
| ``COMPRESS_WORKERS`` | DataLoader workers of a streamed data set (default: CPUs, at most 8) |
| ``COMPRESS_PROGRESS`` | ``bar``, ``lines`` or ``off`` (default: a bar on a terminal, lines otherwise) |
| ``COMPRESS_TRUSTED_CODE`` | modules whose code a model directory may import (docs/SECURITY.md) |
| ``COMPRESS_DEBUG`` | ``1``: the CLI prints tracebacks (``0`` or unset: one line) |
"""

from __future__ import annotations

import os
import re

from compress.errors import CompressError

PROGRESS_ENV = "COMPRESS_PROGRESS"
PROGRESS_MODES = ("bar", "lines", "off")
WORKERS_ENV = "COMPRESS_WORKERS"
DEBUG_ENV = "COMPRESS_DEBUG"
TRUSTED_CODE_ENV = "COMPRESS_TRUSTED_CODE"
_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
# package.module, or package.module:Name. compress.models.trust, which reads the variable when a model
# directory loads, keeps its own copy: that room imports nothing of the toolkit, and this module must not
# import torch. tests/compress/test_environment.py checks that the two agree.
IMPORT_ENTRY = re.compile(rf"^{_NAME}(?::{_NAME})?$")


def progress_mode() -> str | None:
    """COMPRESS_PROGRESS when set, else None."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if not value:
        return None
    if value not in PROGRESS_MODES:
        raise CompressError(f"{PROGRESS_ENV} must be one of {', '.join(PROGRESS_MODES)}, "
                            f"got {os.environ[PROGRESS_ENV]!r}")
    return value


def workers() -> int | None:
    """COMPRESS_WORKERS when set, else None."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit():  # int() would take "1_000" and "+2"
        raise CompressError(f"{WORKERS_ENV} must be a whole number >= 0, got {os.environ[WORKERS_ENV]!r}")
    return int(value)


def debug() -> bool:
    """COMPRESS_DEBUG: 1 on; 0 or unset off."""
    value = os.environ.get(DEBUG_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise CompressError(f"{DEBUG_ENV} must be 1 (tracebacks) or 0, got {os.environ[DEBUG_ENV]!r}")
    return value == "1"


def is_import_entry(name: str) -> bool:
    return bool(IMPORT_ENTRY.match(name))


def trusted_code() -> tuple[str, ...]:
    """COMPRESS_TRUSTED_CODE: comma-separated modules whose code a model directory may import."""
    names = tuple(n.strip() for n in os.environ.get(TRUSTED_CODE_ENV, "").split(",") if n.strip())
    for name in names:
        if not is_import_entry(name):
            raise CompressError(f"{TRUSTED_CODE_ENV}: {name!r} is not a module name (package.module) or an "
                                "import path (package.module:Name)")
    return names


def check() -> None:
    """Refuse a mistyped value of any variable above that has a fixed form."""
    progress_mode()
    workers()
    debug()
    trusted_code()
