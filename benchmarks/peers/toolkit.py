"""This toolkit's side of the benchmark, run through its command line: what a user types.

The shared start is `compress train` (plain epochs); the toolkit's default is `compress slim --from` that
model with the quick preset's settings, plus the scale's data and epochs and `--round-to auto`. Ablation
variants that differ only after a stage reuse the default's finished stages (copied, so each variant's
directory is a complete `compress slim` run that resumes from them), which makes them paired comparisons.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


class StageFailed(RuntimeError):
    """A `compress` command of the benchmark exited with an error (its log is named)."""


def compress_cli(args: list[str], log: Path, device: str | None = None) -> float:
    """Run `python -m compress.cli ARGS`, appending its output to `log`; return the wall time in seconds."""
    cmd = [sys.executable, "-m", "compress.cli", *args] + (["--device", device] if device else [])
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy())
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise StageFailed(f"`compress {args[0]}` failed (exit {proc.returncode}); log {log}:\n{tail}")
    return time.time() - t0


def data_args(cfg: dict, seed: int) -> list[str]:
    args = ["--data", cfg["data"], "--seed", str(seed), "--recipe", cfg["recipe"],
            "--precision", cfg["precision"]]
    for opt, key in (("--train-limit", "train_limit"), ("--test-limit", "test_limit")):
        args += [opt, str(cfg[key])]
    return args


def pretrain(cfg: dict, arch: str, kwargs: dict, seed: int, out: Path, device: str | None) -> float:
    """The shared start: `compress train` without sparsity for the scale's plain epochs."""
    return compress_cli(["train", "--arch", arch, "--arch-kwargs", json.dumps(kwargs), "--epochs",
                         str(cfg["plain_epochs"]), "--out", str(out), *data_args(cfg, seed)],
                        out.parent / "pretrained.log", device)


def slim(cfg: dict, seed: int, start: Path, out: Path, device: str | None, extra: list[str] = ()) -> float:
    """`compress slim --from START` with the quick preset's defaults and the scale's data and epochs."""
    chosen = ["--finetune-lr", repr(cfg["finetune_lr"])] if cfg.get("finetune_lr") else []
    return compress_cli(["slim", "--from", str(start), "--out", str(out), "--epochs", str(cfg["sparse_epochs"]),
                         "--finetune-epochs", str(cfg["finetune_epochs"]), "--round-to", str(cfg["round_to"]),
                         *data_args(cfg, seed), *chosen, *extra], out.parent / f"{out.name}.log", device)


def prune(cfg: dict, sparse: Path, out: Path, device: str | None, extra: list[str]) -> float:
    """`compress prune` of a sparse model into OUT/pruned (`--round-to auto`, the default floor)."""
    if (out / "pruned" / "model.json").exists():
        return 0.0
    return compress_cli(["prune", str(sparse), "--out", str(out / "pruned"), "--round-to", str(cfg["round_to"]),
                         "--data", cfg["data"], "--test-limit", str(cfg["test_limit"]), *extra], out.parent / f"{out.name}.log", device)


def finetune_lr_of(cfg: dict) -> float:
    """The fine-tuning peak LR every method uses: `--finetune-lr`, else the one `compress slim` uses."""
    from compress.training import Recipe

    return Recipe.finetuning(cfg["recipe"], lr=cfg.get("finetune_lr")).lr


def finetune(cfg: dict, seed: int, out: Path, device: str | None, extra: list[str] = ()) -> float:
    """`compress finetune` of OUT/pruned into OUT/finetuned with the recipe `compress slim` fine-tunes with
    (the scale's recipe at its fine-tuning peak LR, or the benchmark's `--finetune-lr`)."""
    return compress_cli(["finetune", str(out / "pruned"), "--out", str(out / "finetuned"), "--epochs",
                         str(cfg["finetune_epochs"]), *data_args(cfg, seed), "--lr", repr(finetune_lr_of(cfg)),
                         *extra], out.parent / f"{out.name}.log", device)


def reuse_stages(src: Path, dst: Path, stages: list[str]) -> None:
    """Copy finished stage directories of one run into another (a variant that differs only later)."""
    for stage in stages:
        target = dst / stage
        if (target / "model.json").exists():
            continue
        if not (src / stage / "model.json").exists():
            raise StageFailed(f"{src / stage} is not finished; run the default first")
        if target.exists():
            shutil.rmtree(target)
        tmp = dst / f".{stage}.copying"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src / stage, tmp, ignore=shutil.ignore_patterns("train_state", "*.lock"))
        tmp.rename(target)


def stage_metas(run: Path, final: str = "finetuned") -> dict:
    """model.json of the sparse, pruned and final stages of a slim-layout run directory."""
    out = {}
    for stage in ("sparse", "pruned", final):
        path = run / stage / "model.json"
        if path.exists():
            out[stage] = json.loads(path.read_text())
    return out
