"""Training loop for sparse training, fine-tuning and distillation, resumable at every epoch."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.atomic import append_jsonl, atomic_path, write_json
from compress.data import ImageSet
from compress.errors import CompressError
from compress.sparsity import optimizer_groups, regularizer_for

STATE_DIR = "train_state"
# Peak fine-tuning LR per recipe, from the sweep in benchmarks/results/sparsity_study.md.
FINETUNE_LR = {"fast": 0.1}  # 0.02: 66.05%, 0.05: 67.45%, 0.1: 68.30%, 0.2: 66.80%


@dataclass
class Recipe:
    """Optimizer and schedule. `paper` is Liu et al.'s; `fast` converges in tens of epochs."""

    epochs: int = 160
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "step"  # step: ÷10 at 50% and 75%; cosine: cosine decay after warm-up
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    warmup_fraction: float = 0.1  # warm-up never takes more than this share of the run

    @property
    def warmup(self) -> float:
        """Warm-up epochs actually used: a 1-epoch fine-tune must not be all warm-up."""
        return min(self.warmup_epochs, self.warmup_fraction * self.epochs)

    @classmethod
    def named(cls, name: str, **overrides) -> "Recipe":
        presets = {
            "paper": {},
            "fast": {"batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "schedule": "cosine",
                     "warmup_epochs": 1.0, "epochs": 30},
        }
        if name not in presets:
            raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(presets)}")
        fields = {**presets[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**fields)

    @classmethod
    def finetuning(cls, name: str, **overrides) -> "Recipe":
        """The recipe for fine-tuning a pruned model: `paper` is the paper's (same as training); `fast`
        uses the peak learning rate measured for fine-tuning (benchmarks/results/sparsity_study.md)."""
        measured = {"fast": {"lr": FINETUNE_LR["fast"]}}
        return cls.named(name, **{**measured.get(name, {}), **{k: v for k, v in overrides.items() if v is not None}})

    def lr_at(self, progress: float) -> float:
        """Learning rate at `progress` epochs (fractional) into training."""
        warmup = self.warmup
        if warmup and progress < warmup:
            return self.lr * (progress + 1e-3) / warmup
        if self.schedule == "step":
            frac = progress / self.epochs
            return self.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
        span = max(self.epochs - warmup, 1e-9)
        t = min(max(progress - warmup, 0.0) / span, 1.0)
        return 0.5 * self.lr * (1 + math.cos(math.pi * t))


@dataclass
class Distill:
    teacher: nn.Module
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft-target term


def distillation_loss(student_logits, teacher_logits, labels, temperature: float, alpha: float,
                      label_smoothing: float = 0.0):
    """Hinton et al.: KL between softened distributions, scaled by T², mixed with the hard-label loss."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                    reduction="batchmean") * (t * t)
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * soft + (1 - alpha) * hard


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, mean, std, *, device="cpu", batch_size: int = 500,
             channels_last: bool = False) -> dict:
    """Top-1 accuracy (a fraction) and mean cross-entropy on `data`."""
    device = torch.device(device)
    model.eval().to(device)
    correct = 0
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    autocast = _autocast(device)
    for x, y in data.batches(batch_size, mean, std, train=False, device=device, channels_last=channels_last):
        with autocast:
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += int((logits.argmax(1) == y).sum())
    n = len(data)
    return {"accuracy": correct / n, "loss": float(loss_sum) / n, "images": n}


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def fit(model: nn.Module, train_data: ImageSet, test_data: ImageSet, out_dir: str | Path, recipe: Recipe, *,
        mean, std, sparsity: float = 0.0, device=None, seed: int = 0, resume: bool = True,
        distill: Distill | None = None, channels_last: bool | None = None, compile: bool = False,
        on_epoch=None, progress: bool = True, desc: str = "train", tag: str | None = None) -> dict:
    """Train `model`; write per-epoch metrics and resumable state under `out_dir`.

    `tag` identifies what is being trained (settings, parent weights): saved state with another tag is
    not resumed but discarded. Returns {"best": {...}, "last": {...}, "history": [...]} with test metrics. The caller writes
    the final model directory; this function owns `metrics.jsonl`, `best/` weights and `train_state/`.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world = _world()
    if world > 1:
        device = _init_distributed(device)
    device = pick_device(device)
    if channels_last is None:
        channels_last = True
    torch.manual_seed(seed + rank)
    if device.type == "cpu":
        # The L1 penalty drives γ towards zero; denormal floats would make CPU kernels crawl.
        torch.set_flush_denormal(True)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(optimizer_groups(model, recipe.weight_decay, sparsity), lr=recipe.lr,
                                momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0,
                                weight_decay=recipe.weight_decay)
    start_epoch, best, history = 0, None, []
    state_dir = out_dir / STATE_DIR
    if resume and (state_dir / "state.json").exists() and _state_tag(state_dir) not in (None, tag):
        print(f"{state_dir} belongs to another run (other settings or parent weights); starting over",
              file=sys.stderr)
        resume = False
    if resume and (state_dir / "state.json").exists():
        start_epoch, best, history = _load_state(state_dir, model, optimizer, device)
        if is_main_process():
            _rewrite_metrics(out_dir, history)
    elif is_main_process():
        # Starting over: nothing of an earlier run may be mistaken for this one's.
        finish(out_dir)
        (out_dir / "metrics.jsonl").unlink(missing_ok=True)
        (out_dir / "best.safetensors").unlink(missing_ok=True)

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        net = torch.compile(net)
    shard = _shard(train_data, rank, world, seed)
    batches = shard.batches(recipe.batch_size, mean, std, train=True, device=device, seed=seed,
                      channels_last=channels_last, drop_last=len(shard) >= 2 * recipe.batch_size)
    teacher = distill.teacher.to(device).eval() if distill else None
    if teacher is not None and channels_last:
        teacher.to(memory_format=torch.channels_last)
    autocast = _autocast(device)
    steps = len(batches)
    regularizer = regularizer_for(sparsity, model, [recipe.lr_at(e + s / steps)
                                                    for e in range(recipe.epochs) for s in range(steps)])
    regularizer.step_index = start_epoch * steps
    regularizer.resume_from(history[-1] if history else None)

    for epoch in range(start_epoch, recipe.epochs):
        batches.set_epoch(epoch)
        net.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(batches, total=steps, desc=f"{desc} {epoch + 1}/{recipe.epochs}", unit="batch",
                   leave=False, disable=not (progress and is_main_process()), mininterval=1.0, dynamic_ncols=True)
        for step, (x, y) in enumerate(bar):
            lr = recipe.lr_at(epoch + step / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
                logits = net(x)
                if teacher is not None:
                    with torch.no_grad():
                        t_logits = teacher(x)
                    loss = distillation_loss(logits.float(), t_logits.float(), y, distill.temperature,
                                             distill.alpha, recipe.label_smoothing)
                else:
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            regularizer.step(optimizer)
            optimizer.step()
            loss_sum += loss.detach() * y.numel()
            correct += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
            if step % 20 == 0 and seen:
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{int(correct) / seen:.3f}",
                                img_s=f"{seen * world / max(elapsed, 1e-9):.0f}", refresh=False)
        bar.close()
        train_time = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(seen, 1),
                  "train_accuracy": int(correct) / max(seen, 1), "lr": lr,
                  "img_per_s": seen * world / max(train_time, 1e-9), "epoch_time_s": train_time,
                  **regularizer.record()}
        record["gamma_sparsity"] = record["gamma_under_1e-2"]
        if is_main_process():
            test = evaluate(model, test_data, mean, std, device=device, channels_last=channels_last)
            record.update({"test_loss": test["loss"], "test_accuracy": test["accuracy"]})
            history.append(record)
            append_jsonl(out_dir / "metrics.jsonl", record)
            if best is None or record["test_accuracy"] > best["test_accuracy"]:
                best = dict(record)
                _save_weights(model, out_dir / "best.safetensors")
            _save_state(state_dir, model, optimizer, epoch + 1, best, history, tag)
            if progress:
                tqdm.write(f"{desc} epoch {epoch + 1}/{recipe.epochs}: loss {record['train_loss']:.3f} "
                           f"train {record['train_accuracy']:.2%} test {record['test_accuracy']:.2%} "
                           f"lr {lr:.4f} {record['img_per_s']:.0f} img/s "
                           f"γ<1e-2 {record['gamma_sparsity']:.1%}")
            if on_epoch is not None:
                on_epoch(record)
    regularizer.close()
    model.to(memory_format=torch.contiguous_format)
    return {"best": best, "last": history[-1] if history else None, "history": history,
            "recipe": asdict(recipe)}


def finish(out_dir: str | Path) -> None:
    """Drop resumable state once the final model directory is written."""
    shutil.rmtree(Path(out_dir) / STATE_DIR, ignore_errors=True)


def _init_distributed(device) -> str:
    """Join the process group that torchrun describes; NCCL on GPUs, gloo on CPUs."""
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def _shard(data: ImageSet, rank: int, world: int, seed: int) -> ImageSet:
    if world == 1:
        return data
    # Equal shard sizes give every rank the same number of steps; otherwise all-reduce would hang.
    per_rank = len(data) // world
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    order = order[rank * per_rank:(rank + 1) * per_rank]
    return data.subset(order)


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def _state_tag(state_dir: Path) -> str | None:
    try:
        return json.loads((state_dir / "state.json").read_text()).get("tag")
    except (OSError, ValueError):
        return None


def _save_state(state_dir: Path, model, optimizer, epoch, best, history, tag=None) -> None:
    """Weights and momentum buffers under epoch-numbered names, then state.json naming them.

    A kill at any point leaves the previous state.json pointing at files that still exist.
    """
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    _save_weights(model, state_dir / f"model-{epoch}.safetensors")
    params = list(model.parameters())
    buffers = {}
    for i, p in enumerate(params):
        st = optimizer.state.get(p, {})
        if "momentum_buffer" in st and st["momentum_buffer"] is not None:
            buffers[f"momentum.{i}"] = st["momentum_buffer"].detach().cpu().contiguous()
    with atomic_path(state_dir / f"optimizer-{epoch}.safetensors") as tmp:
        save_file(buffers, str(tmp))
    write_json(state_dir / "state.json", {"epoch": epoch, "best": best, "history": history,
                                          "num_params": len(params), "tag": tag})
    for old in state_dir.glob("*.safetensors"):
        if not old.name.endswith(f"-{epoch}.safetensors"):
            old.unlink(missing_ok=True)


def _load_state(state_dir: Path, model, optimizer, device):
    from safetensors.torch import load_file

    try:
        state = json.loads((state_dir / "state.json").read_text())
        epoch = int(state["epoch"])
        params = list(model.parameters())
        if state.get("num_params") != len(params):
            raise ValueError("it belongs to a different model")
        model.load_state_dict(load_file(str(_state_file(state_dir, "model", epoch)), device=str(device)))
        buffers = load_file(str(_state_file(state_dir, "optimizer", epoch)), device=str(device))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompressError(f"cannot resume from {state_dir} ({reason}); "
                            "run with --no-resume to start over") from None
    for key, buf in buffers.items():
        optimizer.state[params[int(key.split(".")[1])]]["momentum_buffer"] = buf
    return epoch, state.get("best"), list(state.get("history", []))


def _state_file(state_dir: Path, kind: str, epoch: int) -> Path:
    numbered = state_dir / f"{kind}-{epoch}.safetensors"
    # State written before files were numbered by epoch.
    return numbered if numbered.exists() else state_dir / f"{kind}.safetensors"


def _rewrite_metrics(out_dir: Path, history: list[dict]) -> None:
    # Epochs after the last saved state were lost with the interruption; forget their lines too.
    from compress.atomic import write_text

    write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
