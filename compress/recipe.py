"""The optimizer and schedule of a training run: the paper's recipe and a fast one, with bounds checked."""

from __future__ import annotations

import math
from dataclasses import dataclass

from compress.errors import CompressError

# Peak fine-tuning LR per recipe, from the sweep in benchmarks/results/sparsity_study.md.
FINETUNE_LR = {"fast": 0.1}  # 0.02: 66.05%, 0.05: 67.45%, 0.1: 68.30%, 0.2: 66.80%

# field: (CLI option or None where only Python sets it, low, high, low open, high open).
_BOUNDS = {
    "epochs": ("--epochs", 1, 100_000, False, False),
    "batch_size": ("--batch-size", 1, 2 ** 20, False, False),
    "lr": ("--lr", 0.0, 100.0, True, False),
    "momentum": (None, 0.0, 1.0, False, True),
    "weight_decay": ("--weight-decay", 0.0, 1.0, False, True),
    "warmup_epochs": (None, 0.0, 100_000.0, False, False),
    "label_smoothing": (None, 0.0, 1.0, False, True),
    "warmup_fraction": (None, 0.0, 1.0, False, False),
}


def _check_number(name: str, value) -> None:
    flag, lo, hi, lo_open, hi_open = _BOUNDS[name]
    whole = name in ("epochs", "batch_size")
    kind = "a whole number" if whole else "a finite number"
    ok = isinstance(value, int) if whole else isinstance(value, (int, float))
    ok = ok and not isinstance(value, bool) and (whole or math.isfinite(value))
    ok = ok and (lo < value if lo_open else lo <= value) and (value < hi if hi_open else value <= hi)
    if not ok:
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        named = f"{name} ({flag})" if flag else name
        raise CompressError(f"{named} must be {kind} in {span}, got {value!r}")


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

    def __post_init__(self):
        # Refused here, in one line naming the option, rather than as an overflow deep inside torch.
        for name in _BOUNDS:
            _check_number(name, getattr(self, name))
        if self.schedule not in ("step", "cosine"):
            raise CompressError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if not isinstance(self.nesterov, bool):
            raise CompressError(f"nesterov must be true or false, got {self.nesterov!r}")

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
            raise CompressError(f"unknown recipe {name!r}; choose from {', '.join(presets)}")
        fields_ = {**presets[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**fields_)

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
