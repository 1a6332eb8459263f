"""NVML (nvidia-ml-py) queries for desktop/datacenter GPUs: name, driver, this process's memory.

Jetson modules have no NVML (Thor's is partial); callers treat every answer as optional.
"""

from __future__ import annotations

import os


def _init():
    from compress.runtime.optional import pynvml

    nvml = pynvml()
    nvml.nvmlInit()
    return nvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_summary(index: int = 0) -> dict | None:
    """{'name', 'driver', 'memory_total_bytes'} or None when NVML is unavailable."""
    try:
        nvml = _init()
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        return {"name": _text(nvml.nvmlDeviceGetName(handle)),
                "driver": _text(nvml.nvmlSystemGetDriverVersion()),
                "memory_total_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total)}
    except Exception:  # noqa: BLE001 - MissingExtraError or any NVMLError
        return None


def process_memory_bytes(index: int = 0, pid: int | None = None) -> int | None:
    """GPU memory NVML attributes to this process (None when unknown, e.g. in containers or on Jetson)."""
    pid = os.getpid() if pid is None else pid
    try:
        nvml = _init()
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:  # noqa: BLE001
        return None
    for p in procs:
        if int(p.pid) == pid and p.usedGpuMemory is not None:
            return int(p.usedGpuMemory)
    return None


def power_available(index: int = 0) -> bool:
    try:
        nvml = _init()
        nvml.nvmlDeviceGetPowerUsage(nvml.nvmlDeviceGetHandleByIndex(index))
        return True
    except Exception:  # noqa: BLE001
        return False
