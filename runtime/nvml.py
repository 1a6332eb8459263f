"""NVML (nvidia-ml-py) queries for desktop/datacenter GPUs: name, driver, this process's memory.

Jetson modules have no NVML (Thor's is partial); callers treat every answer as optional.

Every query takes a CUDA device number, as the runtimes do, and `cuda_device_handle` turns it into
NVML's device. The two numberings differ: NVML counts every GPU of the machine in PCI bus order and
ignores CUDA_VISIBLE_DEVICES, while CUDA counts the visible ones, fastest first unless
CUDA_DEVICE_ORDER=PCI_BUS_ID. Reading NVML's device N for CUDA's device N would report another card's
power and memory under the benchmarked card's name, so where the mapping cannot be known, no reading
is made.
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


def cuda_device_handle(nvml, ordinal: int = 0):
    """NVML's handle of the GPU that CUDA calls device `ordinal` in this process. Raises ValueError, naming
    the setting that would make it known, where the two numberings cannot be matched."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = ordinal
    if visible is not None:
        entries = [e.strip() for e in visible.split(",")]
        if ordinal >= len(entries) or not entries[ordinal]:
            raise ValueError(f"CUDA_VISIBLE_DEVICES={visible!r} shows no CUDA device {ordinal}")
        entry = entries[ordinal]
        if entry.startswith(("GPU-", "MIG-")):
            return nvml.nvmlDeviceGetHandleByUUID(entry)
        if not entry.isdigit():
            raise ValueError(f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither a device number nor a UUID")
        physical = int(entry)
    count = int(nvml.nvmlDeviceGetCount())
    if physical >= count:
        raise ValueError(f"CUDA device {physical} is not among NVML's {count} GPUs")
    if count > 1 and os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") != "PCI_BUS_ID":
        # Fastest first orders GPUs of one model by bus, as NVML does; GPUs of several models it may reorder.
        names = {_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)}
        if len(names) > 1:
            raise ValueError(f"CUDA numbers these {count} GPUs of {len(names)} models fastest first and NVML by PCI "
                             "bus, so which one NVML calls CUDA's device is unknown: set CUDA_DEVICE_ORDER=PCI_BUS_ID "
                             "or CUDA_VISIBLE_DEVICES=GPU-<uuid> for power and memory readings")
    return nvml.nvmlDeviceGetHandleByIndex(physical)


def gpu_summary(index: int = 0) -> dict | None:
    """{'name', 'driver', 'memory_total_bytes'} of CUDA device `index`, or None when NVML is unavailable."""
    try:
        nvml = _init()
        handle = cuda_device_handle(nvml, index)
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
        handle = cuda_device_handle(nvml, index)
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
        nvml.nvmlDeviceGetPowerUsage(cuda_device_handle(nvml, index))
        return True
    except Exception:  # noqa: BLE001
        return False
