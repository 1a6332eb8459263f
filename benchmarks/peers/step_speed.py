"""Training-step speed of one network on this CPU, fp32 against bf16 autocast, NCHW against channels_last.

    python benchmarks/peers/step_speed.py preresnet56 --threads 1 --batch 128

What an epoch of a scale would take before committing hours to it (the `cpu` scale's PreResNet-56 half:
about 90 epochs of 50k images). Each variant: a fresh network, SGD with momentum, random inputs, `--warmup`
steps, then the median (and range) of `--steps` timed steps, in the autocast `compress --precision` uses.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from layer_profile import _at_least  # noqa: E402


def measure(arch: str, batch: int, steps: int, warmup: int, bf16: bool, channels_last: bool, width=None) -> dict:
    import torch
    import torch.nn.functional as F

    from compress.models import create_model
    from compress.precision import autocast_for

    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, **({"width": width} if width is not None else {})).train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with autocast_for("bf16" if bf16 else "fp32", torch.device("cpu")):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise SystemExit(f"step_speed: {arch} gave a non-finite loss (bf16={bf16})")

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {"bf16": bf16, "channels_last": channels_last, "median_s": median, "min_s": times[0],
            "max_s": times[-1], "img_per_s": batch / median}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("arch")
    ap.add_argument("--width", type=float, default=None)
    ap.add_argument("--batch", type=_at_least(1), default=128)
    ap.add_argument("--threads", type=_at_least(1), default=1)
    ap.add_argument("--steps", type=_at_least(1), default=5)
    ap.add_argument("--warmup", type=_at_least(0), default=2)
    ap.add_argument("--images", type=_at_least(1), default=50_000, help="images per epoch, for the epoch time")
    args = ap.parse_args(argv)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _report(args)
    finally:
        torch.set_num_threads(before)  # a caller in the same process keeps its own


def _report(args) -> None:
    from compress.errors import CompressError

    print(f"{args.arch}, batch {args.batch}, {args.threads} thread(s), median of {args.steps} steps")
    for bf16 in (False, True):
        for cl in (False, True):
            try:
                r = measure(args.arch, args.batch, args.steps, args.warmup, bf16, cl, args.width)
            except (CompressError, ValueError) as exc:
                raise SystemExit(f"step_speed: {exc}") from None
            print(f"{'bf16 autocast' if bf16 else 'fp32':>13} {'channels_last' if cl else 'NCHW':>13}: "
                  f"{r['median_s'] * 1000:7.0f} ms/step ({r['min_s'] * 1000:.0f}–{r['max_s'] * 1000:.0f}), "
                  f"{r['img_per_s']:6.0f} img/s, {args.images / r['img_per_s'] / 60:5.1f} min per epoch of "
                  f"{args.images:,} images", flush=True)


if __name__ == "__main__":
    main()
