"""The arithmetic a training stage runs in: `auto` (bf16 autocast on CUDA, fp32 elsewhere), `bf16` (bf16
autocast on any device) or `fp32`. Weights, optimizer state and the saved model stay fp32 in every case.

bf16 autocast is not the CPU default: on a CPU without native bf16 instructions (AVX-512 BF16 or AMX) it is
emulated and slower than fp32, and changing the default would change every CPU result already recorded.
Where the CPU has them, `bf16` trains full-width networks faster (PreResNet-56's steps 1.8×, batch 128, one
thread of an AMD EPYC with avx512_bf16: `benchmarks/peers/step_speed.py`), but narrow, pruned ones can train
slower (the README's measurement).
"""

from __future__ import annotations

import functools
import warnings

import torch

from compress.errors import CompressError

PRECISIONS = ("auto", "bf16", "fp32")
LABELS = {"auto": "auto (bf16 autocast on CUDA, fp32 elsewhere)", "bf16": "bf16 autocast", "fp32": "fp32"}


def check_precision(value) -> str:
    if value not in PRECISIONS:
        raise CompressError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def label(precision: str) -> str:
    """How reports name a precision; a recorded mix ("fp32+bf16") is named as recorded."""
    return LABELS.get(precision, precision)


def resolved(precision: str, device: torch.device) -> str:
    """What `precision` means on `device`: "bf16" or "fp32"."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast_for(precision: str, device: torch.device):
    """The autocast context a training step runs under."""
    if resolved(precision, device) == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("this CPU has no native bf16 instructions (AVX-512 BF16 or AMX): bf16 autocast is "
                          "emulated and likely slower than fp32", RuntimeWarning, stacklevel=2)
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (x86: AVX-512 BF16 or AMX-BF16; Arm: BF16), by torch's cpuinfo."""
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is not None:
        try:
            return any("bf16" in name and bool(on) for name, on in capabilities().items())
        except RuntimeError:
            return False
    # Older torch has only the private x86 probes; without either, assume not, so the warning errs to shown.
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(probe()) for probe in probes if probe is not None)
