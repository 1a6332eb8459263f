"""What the CPU offers for int8 and bf16 inference, read from /proc/cpuinfo (no torch, no compiled helpers).

VNNI decides the INT8 recipe on x86: without it, ONNX Runtime's u8 x s8 kernels multiply pairs with
VPMADDUBSW, whose 16-bit sums saturate, so weights must be quantized to 7 bits (reduce_range).
BF16 decides whether OpenVINO can run a float model at bfloat16.
"""

from __future__ import annotations

import platform
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ARM CPUs have int8 dot products (asimddp) and no 16-bit saturation in ONNX Runtime's kernels.
ARM_DOT_FLAGS = ("asimddp",)


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first CPU listed ('flags' on x86, 'Features' on ARM); empty when unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def nchwc_block(flags: set[str] | None = None, machine: str | None = None) -> int:
    """The channel block of ONNX Runtime's blocked (NCHWc) CPU convolutions: 16 with AVX-512F, 8 with AVX2,
    1 elsewhere. ORT converts a convolution to that layout only when its channel counts are multiples of
    the block (MLAS platform setup and NchwcTransformer), so a pruned width that is not one runs the slower
    plain kernel: full-width VGG-19 at half its MACs ran 1.29x faster at batch 1 with widths rounded to 1
    and 2.13x with widths rounded to 16 (benchmarks/deploy/README.md)."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return 1
    if "avx512f" in flags:
        return 16
    return 8 if "avx2" in flags else 1


def has_vnni(flags: set[str]) -> bool:
    return any(f in flags for f in VNNI_FLAGS)


def has_bf16(flags: set[str]) -> bool:
    return any(f in flags for f in BF16_FLAGS)


def int8_isa(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The instruction-set class that picks the CPU INT8 recipe: 'vnni', 'avx2' (x86 without VNNI) or 'arm64'.

    'avx2' also covers AVX-512 CPUs without VNNI: both saturate in VPMADDUBSW.
    """
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64") or any(f in flags for f in ARM_DOT_FLAGS):
        return "arm64"
    return "vnni" if has_vnni(flags) else "avx2"


def saturates(file_isa: str | None, here: str | None = None) -> bool:
    """Whether an INT8 file quantized for `file_isa` computes other outputs on this CPU (`here`, its
    int8_isa by default): a vnni or arm64 file keeps 8-bit weights, on which the u8 x s8 kernels of an x86
    CPU without VNNI saturate (measured: 19% of the largest logit off float32 on an AVX2-only EPYC,
    2026-12-07, in ONNX Runtime and OpenVINO alike, against 1% for the avx2 recipe's 7-bit weights)."""
    return file_isa in ("vnni", "arm64") and (here or int8_isa()) == "avx2"


def describe(flags: set[str] | None = None) -> dict:
    """The flags a deployment report records: VNNI, BF16, AVX2/AVX-512, and the INT8 recipe class."""
    flags = cpu_flags() if flags is None else flags
    wanted = ("avx2", "avx512f", *VNNI_FLAGS, *BF16_FLAGS, "amx_int8", *ARM_DOT_FLAGS)
    return {"flags": sorted(f for f in wanted if f in flags), "vnni": has_vnni(flags), "bf16": has_bf16(flags),
            "int8_isa": int8_isa(flags)}
