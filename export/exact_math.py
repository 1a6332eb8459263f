"""Float32 arithmetic as written, for references that other arithmetic is judged against.

On a CUDA GPU, torch runs float32 convolutions in TF32 by default (10-bit mantissa): a reference computed so
is off by about 1e-3 relative, which a parity or self-check tolerance would read as the export's or the
pruning's error. Imported by the export checks and the pruning self-check; torch is imported when used.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for CUDA convolutions and matmuls inside the block; the caller's settings come back after."""
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
