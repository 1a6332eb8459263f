"""Small helpers of the peer benchmark: atomic JSON files, a per-run lock, the machine's description."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def atomic_json(path: Path, data) -> None:
    """Write JSON under a temporary name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Held while one process runs one (seed, method); `with RunLock(p) as held` gives False when another
    live process holds it. A lock left by a dead process is taken over."""

    def __init__(self, path: Path):
        self.path = path
        self.held = False

    def __enter__(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and _alive(pid):
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self.held = True
            return True
        return False

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def machine() -> str:
    """CPU model, cores and the instruction-set flags that decide ORT/OpenVINO kernels; library versions."""
    import importlib.metadata as md

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags)
    versions = []
    for dist in ("torch", "torch-pruning", "onnxruntime", "openvino"):
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return (f"{model}, {os.cpu_count()} cores ({isa or 'no AVX2'}), OMP_NUM_THREADS={threads}; "
            + ", ".join(versions))


def conv_positions(model, input_size) -> dict:
    """{convolution's module name: output height × width} from one forward pass of a zero image of
    `input_size` (C, H, W); the model's train/eval mode is restored."""
    import torch
    from torch import nn

    positions = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: positions.__setitem__(n, o.shape[-2] * o.shape[-1]))
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return positions
