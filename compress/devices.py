"""The device a command runs on, checked before any work: a misspelled name or a GPU this machine lacks
otherwise failed only after the data was loaded (or, for `cuda:1` without a GPU, as "Found no NVIDIA driver")."""

from __future__ import annotations

import torch

from compress.errors import CompressError


def check_device(requested: str | torch.device) -> torch.device:
    """`requested` ("cpu", "cuda", "cuda:1", a torch.device) as a torch.device this machine has."""
    try:
        device = torch.device(requested.strip() if isinstance(requested, str) else requested)
    except (RuntimeError, TypeError, ValueError):
        raise CompressError(f"device {requested!r} is not a device name; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CompressError(f"device {requested!r} names a CUDA GPU, but torch finds none on this machine "
                                "(torch.cuda.is_available() is false); use cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise CompressError(f"device {requested!r} is not on this machine, which has {count} CUDA "
                                f"device(s): cuda:0 to cuda:{count - 1}")
    elif device.type != "cpu":
        backend = getattr(torch, device.type, None)  # torch.mps, torch.xpu: each says whether it is there
        if not getattr(backend, "is_available", lambda: False)():
            raise CompressError(f"device {requested!r} is not available on this machine; use cpu or cuda")
    return device
