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
    """TF32 off for CUDA convolutions and matmuls inside the block; the caller's settings come back after.

    torch 2.9 added `fp32_precision`; once a process has set it, reading the older `allow_tf32` raises, while
    the new one reads either. So the new setting is used where it exists."""
    import torch

    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(getattr(conv, "conv", None), "fp32_precision"):
        flags, exact = [(matmul, "fp32_precision"), (conv.conv, "fp32_precision")], "ieee"
    else:
        flags, exact = [(matmul, "allow_tf32"), (conv, "allow_tf32")], False
    saved = [getattr(owner, name) for owner, name in flags]
    for owner, name in flags:
        setattr(owner, name, exact)
    try:
        yield
    finally:
        for (owner, name), value in zip(flags, saved):
            setattr(owner, name, value)
