"""Writing `X.engine.json` beside every engine: what built it, for what GPU, from which ONNX.

The runtime reads and checks sidecars (`compress.runtime.engine_sidecar`, which defines the format);
this module writes them with the same definitions, and re-exports the reading side for the export
code and its callers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from compress.runtime.atomic import write_text
from compress.runtime.engine_sidecar import (FORMAT, REQUIRED, capability_str, check_sidecar, read_sidecar,
                                             sidecar_path)

__all__ = ["FORMAT", "REQUIRED", "capability_str", "check_sidecar", "read_sidecar", "sidecar_path", "sidecar_text",
           "write_sidecar"]


def sidecar_text(info: dict[str, Any]) -> str:
    missing = [k for k in REQUIRED if k not in info]
    if missing:
        raise ValueError(f"engine sidecar lacks {', '.join(missing)}")
    body = {"format": FORMAT, **info, "compute_capability": capability_str(info["compute_capability"])}
    return json.dumps(body, indent=2, allow_nan=False) + "\n"


def write_sidecar(engine_path: str | os.PathLike, info: dict[str, Any]) -> Path:
    return write_text(sidecar_path(engine_path), sidecar_text(info))
