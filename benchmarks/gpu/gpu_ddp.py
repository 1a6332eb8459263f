"""Step 5: DistributedDataParallel through the toolkit's training entry point, launched by torchrun.

`torchrun --nproc_per_node=1 -m compress.cli train ...`: one epoch on a subset. fit() joins the process
group torchrun describes (NCCL on a GPU, gloo on a CPU) even with one process, wraps the network in DDP,
and records the backend in every metrics line; this step reads it back from metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DdpScale:
    arch_args: tuple[str, ...]
    train_limit: int
    test_limit: int
    batch_size: int


FULL = DdpScale(("--arch", "vgg19"), 5000, 1000, 64)
DRY = DdpScale(("--arch", "vgg19", "--width", "0.0625"), 32, 16, 16)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(scale: DdpScale, data_spec: str, work: Path, seconds: float) -> dict:
    out = work / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(_free_port()),
           "-m", "compress.cli", "train", *scale.arch_args, "--data", data_spec, "--train-limit",
           str(scale.train_limit), "--test-limit", str(scale.test_limit), "--epochs", "1", "--recipe", "paper",
           "--batch-size", str(scale.batch_size), "--no-resume", "--out", str(out)]
    print("ddp: " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(seconds, 1.0),
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"torchrun did not finish in {seconds:.0f} s", "command": cmd}
    took = round(time.monotonic() - t0, 1)
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": "failed", "reason": f"exit status {proc.returncode}: {tail[:300]}", "command": cmd,
                "seconds": took}
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    meta = json.loads((out / "model.json").read_text())
    return {"status": "ok", "seconds": took, "command": " ".join(cmd[2:]), "backend": last.get("ddp_backend"),
            "world_size": last.get("world_size"), "img_per_s": last["img_per_s"], "epochs": len(lines),
            "test_accuracy": meta["accuracy"], "model_dir_written": True}


def markdown(result: dict) -> list[str]:
    lines = ["## DDP through `compress train` under torchrun", ""]
    if result.get("status") != "ok":
        return lines + [f"Not run: {result.get('reason')}.", ""]
    return lines + [f"`torchrun {result['command'].split(' ', 1)[1]}`", "",
                    f"Process group backend **{result['backend']}**, world size {result['world_size']}: one epoch "
                    f"at {result['img_per_s']:,.0f} img/s, test accuracy {result['test_accuracy']:.2%}, in "
                    f"{result['seconds']} s with start-up. The model directory was written by rank 0.", ""]
