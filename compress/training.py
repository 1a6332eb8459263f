"""Training loop for sparse training, fine-tuning and distillation, resumable at every saved epoch.

    result = fit(model, train, test, "runs/x", Recipe.named("paper"), mean=m, std=s,
                 options=FitOptions(sparsity=1e-4, compile=True))

On a GPU the loop keeps the decoded uint8 images on the device (augmented there as whole-batch tensor
ops), runs bf16 autocast by default (FitOptions.precision) in channels_last, uses the fused SGD kernel,
and syncs with the host only every CHECK_STEPS steps (to check the loss is finite) and at the end of an
epoch.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from compress.atomic import append_jsonl
from compress.data import ImageSet
from compress.devices import check_device
from compress.errors import CompressError
from compress.logits import check_classifier, logits_of
from compress.precision import autocast_for, check_precision, resolved
from compress.progress import Progress, say
from compress.recipe import FINETUNE_LR, Recipe  # noqa: F401 - both still importable from here
from compress.sparsity import optimizer_groups, regularizer_for
from compress.train_state import (STATE_DIR, check_discardable, finish, load_state, publish_best, rewrite_metrics,
                                  same_run, state_tag)
from compress.train_state import save_state as _save_state  # looked up at call time: tests pause here

# The loss is checked for NaN/inf every this many steps (one host sync) and at the end of every epoch.
CHECK_STEPS = 50
# On a GPU an epoch of CIFAR takes seconds, and writing 2 × the weights each epoch would cost more than
# 10% of the run: state is then saved at most this often (and after the last epoch).
GPU_CHECKPOINT_S = 30.0
MAX_SEED = 2 ** 63 - 1


class NonFiniteLoss(CompressError):
    """Training reached a NaN or infinite loss and stopped."""


class NonFiniteOutput(CompressError):
    """A model returned NaN or infinite logits, so no accuracy is reported from it: argmax would still pick
    a class and give a plausible-looking figure for a broken network."""


@dataclass
class Distill:
    teacher: nn.Module
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft-target term


@dataclass
class FitOptions:
    """How `fit` trains, beside the model, the data and the recipe.

    sparsity: λ (the paper's subgradient), a SparsityConfig or a ready SparsityRegularizer.
    channels_last: None = on. precision: auto (bf16 autocast on CUDA, fp32 elsewhere), bf16 (bf16 autocast on
    any device) or fp32 (see compress.precision); the test set is evaluated as `evaluate` says.
    compile: True compiles with inductor; a string names another torch.compile backend. Shapes are
    static, so a second stage of the same architecture in one process reuses the compiled code.
    tag: identifies what is trained (settings, parent weights). settings: the JSON-able settings the tag
    stands for, saved with the state. Saved state with another tag is discarded when only the inputs
    differ (`INPUT_SETTINGS`: the parent weights changed, so it is stale); where other settings differ it
    is refused, so a rerun with a mistyped option cannot throw hours of resumable training away.
    checkpoint_every_s: None = after every epoch on a CPU, at most every GPU_CHECKPOINT_S on a GPU.
    """

    sparsity: object = 0.0
    device: str | torch.device | None = None
    seed: int = 0
    resume: bool = True
    distill: Distill | None = None
    channels_last: bool | None = None
    precision: str = "auto"
    compile: bool | str = False
    on_epoch: Callable[[dict], None] | None = None
    progress: bool = True
    desc: str = "train"
    tag: str | None = None
    settings: dict | None = None
    checkpoint_every_s: float | None = None

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise CompressError(f"seed (--seed) must be a whole number in [0, 2**63 - 1], got {self.seed!r}")
        every = self.checkpoint_every_s
        if every is not None and (isinstance(every, bool) or not isinstance(every, (int, float))
                                  or not math.isfinite(every) or every < 0):
            raise CompressError(f"checkpoint_every_s must be a finite number >= 0, got {every!r}")
        check_precision(self.precision)


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
        return check_device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, mean, std, *, device="cpu", batch_size: int = 500,
             channels_last: bool = False, precision: str = "auto") -> dict:
    """Top-1 accuracy (a fraction) and mean cross-entropy on `data`, in bf16 autocast on a GPU unless
    `precision` is fp32, and in fp32 on a CPU (the arithmetic of the exported model, whatever training ran in)."""
    device = torch.device(device)
    model.eval().to(device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    broken = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    autocast = autocast_for("fp32" if precision == "fp32" else "auto", device)
    for x, y in data.batches(batch_size, mean, std, train=False, device=device, channels_last=channels_last):
        with autocast:
            logits = logits_of(model(x))
        broken += (~torch.isfinite(logits)).any(1).sum()
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
    n = len(data)
    if int(broken):
        raise NonFiniteOutput(f"the model outputs NaN or infinite logits for {int(broken):,} of {n:,} test images; "
                              "no accuracy is reported from a broken model")
    return {"accuracy": int(correct) / n, "loss": float(loss_sum) / n, "images": n}


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def images_per_rank(images: int) -> int:
    """What _shard gives each rank of a torchrun job (all of them to a lone process)."""
    return images // _world()[1]


def _under_torchrun() -> bool:
    """torchrun sets these for every worker, also with --nproc_per_node=1 (a process group of one)."""
    return "LOCAL_RANK" in os.environ and "MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ


def fit(model: nn.Module, train_data: ImageSet, test_data: ImageSet, out_dir: str | Path, recipe: Recipe, *,
        mean, std, options: FitOptions | None = None, **overrides) -> dict:
    """Train `model`; write per-epoch metrics and resumable state under `out_dir`.

    `options` (a FitOptions) says how; keywords named like its fields override it (the older call form,
    ``fit(..., sparsity=1e-4, progress=False)``). Returns {"best", "last", "history", "recipe",
    "distributed", "precision"} with test metrics. The caller writes the final model directory; this
    function owns `metrics.jsonl`, `best.safetensors` and `train_state/`. A NaN or infinite loss stops training with
    NonFiniteLoss and leaves the last saved state as it was.
    """
    known = {f.name for f in fields(FitOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"fit() got unknown option(s) {', '.join(unknown)}; FitOptions has {', '.join(sorted(known))}")
    options = replace(options or FitOptions(), **overrides)
    if options.tag is None:
        # Without a caller's tag, saved state is resumed only by a call that trains the same way: a second
        # fit() into one folder with another recipe or penalty returned the first call's weights untrained.
        options = replace(options, tag=_call_tag(model, recipe, options))
    check_batch_norm_batches(model, images_per_rank(len(train_data)), recipe.batch_size)
    check_classifier(model, test_data, mean, std, teacher=options.distill.teacher if options.distill else None)
    run = _Run(model, recipe, Path(out_dir), options)
    run.prepare(train_data, mean, std)
    try:
        for epoch in range(run.start_epoch, recipe.epochs):
            record = run.train_epoch(epoch)
            run.end_epoch(epoch, record, test_data)
    finally:
        run.regularizer.close()
    model.to(memory_format=torch.contiguous_format)
    # A run resumed in another precision says so ("fp32+bf16"), rather than naming only the last one.
    used = dict.fromkeys(r.get("precision", "unrecorded") for r in run.history) or {run.precision: None}
    return {"best": run.best, "last": run.history[-1] if run.history else None, "history": run.history,
            "recipe": asdict(recipe), "distributed": run.distributed, "precision": "+".join(used)}


def drops_last(images: int, batch_size: int) -> bool:
    """Whether an epoch drops its last, partial batch: with two full batches or more (a different few images
    each epoch), and always when it would hold one image, which BatchNorm cannot normalize in training."""
    return images >= 2 * batch_size or (images > batch_size and images % batch_size == 1)


def check_batch_norm_batches(model: nn.Module, images: int, batch_size: int) -> None:
    """Refuse, before anything is written, training whose batches would give BatchNorm one image: its
    batch statistics need two, and torch failed at the first such batch ("Expected more than 1 value per
    channel"). Batches never end in one image (drops_last), so that leaves a batch size of 1 and one image."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    if batch_size < 2:
        raise CompressError("batch size (--batch-size) 1: BatchNorm needs at least 2 images per training batch; "
                            "use --batch-size 2 or more")
    if images == 1:
        raise CompressError("1 training image: BatchNorm needs at least 2 "
                            "images per training batch; train on 2 images or more (--train-limit)")


class _Run:
    """One call of `fit`: the model, optimizer, batches and bookkeeping, split into steps of the loop."""

    def __init__(self, model: nn.Module, recipe: Recipe, out_dir: Path, opts: FitOptions):
        self.model, self.recipe, self.out_dir, self.opts = model, recipe, out_dir, opts
        self.rank, self.world = _world()
        self.distributed = None
        if self.world > 1 or _under_torchrun():
            self.distributed = _init_distributed(opts.device, self.world)
        self.device = pick_device(self.distributed["device"] if self.distributed else opts.device)
        self.channels_last = True if opts.channels_last is None else opts.channels_last
        self.state_dir = out_dir / STATE_DIR
        self.start_epoch, self.best, self.history = 0, None, []
        self.show = opts.progress and is_main_process()
        every = opts.checkpoint_every_s
        self.checkpoint_every = (GPU_CHECKPOINT_S if self.device.type == "cuda" else 0.0) if every is None else every
        self.last_saved = time.monotonic()
        self.saved_epoch = 0
        self.best_weights = None  # the best epoch's weights, until the next checkpoint writes them

    def prepare(self, train_data, mean, std) -> None:
        opts, model, device = self.opts, self.model, self.device
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(opts.seed + self.rank)
        if device.type == "cpu":
            # The L1 penalty drives γ towards zero; denormal floats would make CPU kernels crawl.
            torch.set_flush_denormal(True)
        else:
            torch.backends.cudnn.benchmark = True  # fixed batch shapes: pick the fastest kernels once
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = _optimizer(model, self.recipe, opts.sparsity, device)
        self._resume_or_reset()
        net = model
        if self.distributed:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if opts.compile:
            backend = opts.compile if isinstance(opts.compile, str) else "inductor"
            net = torch.compile(net, backend=backend, dynamic=False)
        self.net = net
        shard = _shard(train_data, self.rank, self.world, opts.seed)
        bs = self.recipe.batch_size
        self.batches = shard.batches(bs, mean, std, train=True, device=device, seed=opts.seed,
                                     channels_last=self.channels_last, drop_last=drops_last(len(shard), bs))
        self.mean, self.std = mean, std
        self.teacher = opts.distill.teacher.to(device).eval() if opts.distill else None
        if self.teacher is not None and self.channels_last:
            self.teacher.to(memory_format=torch.channels_last)
        self.autocast = autocast_for(opts.precision, device)
        self.precision = resolved(opts.precision, device)
        self.steps = steps = len(self.batches)
        lrs = [self.recipe.lr_at(e + s / steps) for e in range(self.recipe.epochs) for s in range(steps)]
        self.regularizer = regularizer_for(opts.sparsity, model, lrs, input_size=train_data.input_size)
        self.regularizer.step_index = self.start_epoch * steps
        self.regularizer.resume_from(self.history[-1] if self.history else None)

    def _resume_or_reset(self) -> None:
        opts, state_dir = self.opts, self.state_dir
        resume = opts.resume and (state_dir / "state.json").exists()
        if resume and state_tag(state_dir) not in (None, opts.tag) and not same_run(state_dir, opts.settings):
            check_discardable(state_dir, opts.settings)
            print(f"{state_dir} belongs to another run (other parent weights or, from an older version, other "
                  "settings); starting over", file=sys.stderr)
            resume = False
        if resume:
            self.start_epoch, self.best, self.history = load_state(state_dir, self.model, self.optimizer, self.device)
            self.saved_epoch = self.start_epoch
            if is_main_process():
                rewrite_metrics(self.out_dir, self.history)
                publish_best(state_dir, self.out_dir)  # a kill may have come between the state and the copy
        elif is_main_process():
            # Starting over: nothing of an earlier run may be mistaken for this one's.
            finish(self.out_dir)
            (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)
            (self.out_dir / "best.safetensors").unlink(missing_ok=True)

    def train_epoch(self, epoch: int) -> dict:
        self.batches.set_epoch(epoch)
        self.net.train()
        tally = _Tally(self.device)
        t0 = time.perf_counter()
        lr = self.recipe.lr_at(epoch)
        with Progress(self.steps, f"{self.opts.desc} {epoch + 1}/{self.recipe.epochs}", unit="batch",
                      enabled=self.show) as bar:
            for step, (x, y) in enumerate(self.batches):
                lr = self._step(x, y, epoch + step / self.steps, tally)
                bar.update()
                if (step + 1) % CHECK_STEPS == 0:
                    self._check_finite(tally, epoch)
                if bar.due():
                    bar.show(**tally.postfix(time.perf_counter() - t0, self.world))
        self._check_finite(tally, epoch)
        seconds = time.perf_counter() - t0
        seen = max(tally.seen, 1)
        record = {"epoch": epoch + 1, "train_loss": float(tally.loss_sum) / seen,
                  "train_accuracy": int(tally.correct) / seen, "lr": lr,
                  "img_per_s": tally.seen * self.world / max(seconds, 1e-9), "epoch_time_s": seconds,
                  "precision": self.precision,
                  **self.regularizer.record()}
        record["gamma_sparsity"] = record["gamma_under_1e-2"]
        if self.distributed:
            record.update(ddp_backend=self.distributed["backend"], world_size=self.world)
        return record

    def _step(self, x, y, progress: float, tally: "_Tally") -> float:
        recipe, optimizer = self.recipe, self.optimizer
        lr = recipe.lr_at(progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with self.autocast:
            logits = logits_of(self.net(x))
            if self.teacher is not None:
                with torch.no_grad():
                    t_logits = logits_of(self.teacher(x), "the teacher")
                d = self.opts.distill
                loss = distillation_loss(logits.float(), t_logits.float(), y, d.temperature, d.alpha,
                                         recipe.label_smoothing)
            else:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.regularizer.step(optimizer)
        optimizer.step()
        tally.add(loss, logits, y)
        return lr

    def _check_finite(self, tally: "_Tally", epoch: int) -> None:
        step = tally.first_nonfinite()
        if step is None:
            return
        raise NonFiniteLoss(f"{self.opts.desc}: the loss became NaN or infinite at epoch {epoch + 1}, step "
                            f"{step + 1}/{self.steps} (learning rate {self.recipe.lr_at(epoch + step / self.steps):g}); "
                            f"training stopped, {self._kept()}: lower --lr, or check the data and the weights")

    def _kept(self) -> str:
        if self.saved_epoch:
            return f"the last good state (epoch {self.saved_epoch}) stays in {self.state_dir} and no model was written"
        return "no epoch had been saved and no model was written"

    def end_epoch(self, epoch: int, record: dict, test_data) -> None:
        if not is_main_process():
            return
        opts = self.opts
        try:
            test = evaluate(self.model, test_data, self.mean, self.std, device=self.device,
                            channels_last=self.channels_last, precision=self.opts.precision)
        except NonFiniteOutput:
            test = {"loss": math.nan}
        if not math.isfinite(test["loss"]):
            raise NonFiniteLoss(f"{opts.desc}: the test loss after epoch {epoch + 1} is NaN or infinite (the weights "
                                f"diverged); training stopped, {self._kept()}: lower --lr")
        record.update({"test_loss": test["loss"], "test_accuracy": test["accuracy"]})
        self.history.append(record)
        append_jsonl(self.out_dir / "metrics.jsonl", record)
        if self.best is None or record["test_accuracy"] > self.best["test_accuracy"]:
            self.best = dict(record)
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        last = epoch + 1 == self.recipe.epochs
        if last or time.monotonic() - self.last_saved >= self.checkpoint_every:
            self._checkpoint(epoch + 1)
        if self.show:
            say(f"{opts.desc} epoch {epoch + 1}/{self.recipe.epochs}: loss {record['train_loss']:.3f} "
                f"train {record['train_accuracy']:.2%} test {record['test_accuracy']:.2%} "
                f"lr {record['lr']:.4f} {record['img_per_s']:.0f} img/s γ<1e-2 {record['gamma_sparsity']:.1%}")
        if opts.on_epoch is not None:
            opts.on_epoch(record)

    def _checkpoint(self, epoch: int) -> None:
        new_best, self.best_weights = self.best_weights, None
        _save_state(self.state_dir, self.model, self.optimizer, epoch, self.best, self.history, self.opts.tag,
                    self.opts.settings, best_weights=new_best)
        if new_best is not None:
            publish_best(self.state_dir, self.out_dir)
        self.saved_epoch, self.last_saved = epoch, time.monotonic()


def _call_tag(model: nn.Module, recipe: Recipe, options: FitOptions) -> str:
    import hashlib

    identity = {"recipe": asdict(recipe), "sparsity": options.sparsity, "seed": options.seed,
                "distill": None if options.distill is None else [options.distill.temperature, options.distill.alpha],
                "shapes": [list(p.shape) for p in model.parameters()]}
    return "fit-" + hashlib.sha256(json.dumps(identity, sort_keys=True, default=repr).encode()).hexdigest()[:16]


class _Tally:
    """An epoch's sums kept on the device (no host sync per step), and the last CHECK_STEPS losses."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.recent = torch.zeros(CHECK_STEPS, device=device)
        self.seen = self.steps_done = self.checked = 0

    def add(self, loss, logits, y) -> None:
        loss = loss.detach()
        self.recent[self.steps_done % CHECK_STEPS] = loss
        self.loss_sum += loss * y.numel()
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += y.numel()
        self.steps_done += 1

    def first_nonfinite(self) -> int | None:
        """The step (in this epoch) of the first non-finite loss since the last check, or None."""
        start, end = self.checked, self.steps_done
        self.checked = end
        if end == start:
            return None
        slots = [(s % CHECK_STEPS) for s in range(start, end)]
        bad = ~torch.isfinite(self.recent[slots])
        if not bool(bad.any()):
            return None
        return start + int(bad.nonzero()[0, 0])

    def postfix(self, seconds: float, world: int) -> dict:
        seen = max(self.seen, 1)
        return {"loss": f"{float(self.loss_sum) / seen:.3f}", "acc": f"{int(self.correct) / seen:.3f}",
                "img_s": f"{self.seen * world / max(seconds, 1e-9):.0f}"}


def _optimizer(model: nn.Module, recipe: Recipe, sparsity, device: torch.device) -> torch.optim.Optimizer:
    groups = optimizer_groups(model, recipe.weight_decay, sparsity)
    kwargs = dict(lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0,
                  weight_decay=recipe.weight_decay)
    if device.type == "cuda":
        # One fused kernel for the whole update instead of a few per parameter tensor.
        kwargs["fused"] = True
    return torch.optim.SGD(groups, **kwargs)


def _init_distributed(device, world: int) -> dict:
    """Join the process group that torchrun describes; NCCL on GPUs, gloo on CPUs."""
    import torch.distributed as dist

    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        where = f"cuda:{local}"
    else:
        where = "cpu"
    return {"backend": dist.get_backend(), "world_size": world, "device": where}


def _shard(data: ImageSet, rank: int, world: int, seed: int) -> ImageSet:
    if world == 1:
        return data
    # Equal shard sizes give every rank the same number of steps; otherwise all-reduce would hang.
    per_rank = len(data) // world
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    order = order[rank * per_rank:(rank + 1) * per_rank]
    return data.subset(order)
