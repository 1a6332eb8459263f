"""Step 1: where the figures come from (GPU, driver, clocks, torch, CUDA, cuDNN, libraries, CPU, git)."""

from __future__ import annotations

import shutil
import subprocess
from importlib import metadata

# Tried in order: a field a driver does not know fails the whole query.
NVIDIA_SMI_FIELDS = ("name,driver_version,memory.total,pstate,temperature.gpu,power.draw,power.limit,clocks.sm,"
                     "clocks.max.sm,clocks.mem,clocks.max.mem,clocks_event_reasons.active,persistence_mode",
                     "name,driver_version,memory.total,power.limit,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem")
PACKAGES = ("torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "timm", "safetensors", "nvidia-ml-py",
            "numpy", "click", "cnn-compress")


def _nvidia_smi() -> dict:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"skipped": "nvidia-smi not found (no NVIDIA driver here)"}
    error = ""
    for fields in NVIDIA_SMI_FIELDS:
        proc = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv"], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode == 0:
            lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
            keys = [k.strip() for k in lines[0].split(",")]
            return {"gpus": [dict(zip(keys, (v.strip() for v in line.split(",")))) for line in lines[1:]]}
        error = (proc.stderr or proc.stdout).strip()[:500]
    return {"error": error}


def _pick(row: dict, *prefixes: str) -> str:
    """A value of an nvidia-smi CSV row by the start of its header (headers carry units: 'clocks.current.sm [MHz]')."""
    for prefix in prefixes:
        for key, value in row.items():
            if key.startswith(prefix):
                return value
    return "—"


def _torch_cuda() -> dict:
    import torch

    out = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if not torch.cuda.is_available():
        out["skipped"] = "no CUDA device: GPU properties, clocks and NVML are recorded on the GPU machine only"
        return out
    p = torch.cuda.get_device_properties(0)
    out.update(device=p.name, compute_capability=f"{p.major}.{p.minor}", multiprocessors=p.multi_processor_count,
               memory_bytes=p.total_memory, device_count=torch.cuda.device_count(),
               bf16_supported=torch.cuda.is_bf16_supported(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
               tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return out


def _packages() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def record(dry_run: bool) -> dict:
    """Everything a reader needs to judge the figures of the other steps."""
    import os

    import torch

    from compress.precision import cpu_has_native_bf16
    from compress.runtime.sysinfo import collect_system

    system = collect_system(gpu=torch.cuda.is_available())
    # Which of compress.precision's probes this torch has (get_capabilities is newer than some 2.x releases).
    cpu_bf16 = {"get_capabilities": hasattr(torch.cpu, "get_capabilities"), "native": cpu_has_native_bf16()}
    return {"dry_run": dry_run, "torch_cuda": _torch_cuda(), "nvidia_smi": _nvidia_smi(), "packages": _packages(),
            "system": system, "cpu_threads_torch": torch.get_num_threads(), "cpu_affinity": len(os.sched_getaffinity(0)),
            "cpu_bf16": cpu_bf16}


def markdown(env: dict) -> list[str]:
    tc, sysinfo = env["torch_cuda"], env["system"]
    gpu = tc.get("device") or "none (CPU only)"
    smi = (env["nvidia_smi"].get("gpus") or [{}])[0]
    lines = ["## Environment", "",
             f"- GPU: {gpu}" + (f", compute capability {tc['compute_capability']}, {tc['multiprocessors']} SMs, "
                                f"{tc['memory_bytes'] / 2**30:.0f} GiB" if tc.get("device") else ""),
             f"- driver {_pick(smi, 'driver_version')}, clocks SM {_pick(smi, 'clocks.current.sm', 'clocks.sm')} "
             f"(max {_pick(smi, 'clocks.max.sm')}), memory {_pick(smi, 'clocks.current.memory', 'clocks.mem')} "
             f"(max {_pick(smi, 'clocks.max.memory', 'clocks.max.mem')}), power limit {_pick(smi, 'power.limit')}, "
             f"pstate {_pick(smi, 'pstate')}",
             f"- torch {tc['torch']} (CUDA {tc['cuda_build']}, cuDNN {tc['cudnn']}), "
             + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v and k != "torch"),
             f"- CPU: {sysinfo.get('cpu_model')} ({sysinfo.get('cpu_count')} CPUs), {sysinfo.get('os')}; bf16 "
             f"instructions: {(env.get('cpu_bf16') or {}).get('native', 'not recorded')}",
             f"- git: {(sysinfo.get('git') or {}).get('commit', 'unknown')}", ""]
    return lines
