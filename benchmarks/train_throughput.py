"""Training throughput of the toolkit's loop against a plain PyTorch loop, same model and batch.

The plain loop is the floor: a fixed pre-normalized batch, forward, cross-entropy, backward, SGD step.
The toolkit's loop adds what real training needs: shuffled batches from the uint8 cache, batched crop +
flip, normalization, the L1 subgradient on BN γ, progress output and metrics. Both run in channels_last.
The GPU counterpart, with bf16, torch.compile and CUDA graphs, is benchmarks/gpu/gpu_throughput.py.

    python benchmarks/train_throughput.py --width 0.25 --batches 40 --repeats 5
    python benchmarks/train_throughput.py --width 1.0 --batches 6 --repeats 3

Prints median img/s with min and max over repeats, and the ratio toolkit / plain.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from compress.data import ImageSet
from compress.training import FitOptions, Recipe, fit
from compress.models import create_model


def plain_loop(model, batch_size: int, batches: int, regularizer: str | None = None) -> float:
    """The floor; with `regularizer` ("subgradient" or "proximal"), the same loop plus the public API's
    one call per step (compress.SparsityRegularizer): what a user's own loop pays for slimming."""
    import compress

    x = torch.randn(batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    reg = compress.SparsityRegularizer(model, 1e-4, mode=regularizer) if regularizer else None
    model.train()
    t0 = time.perf_counter()
    for _ in range(batches):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if reg is not None:
            reg.step(opt)
        opt.step()
    elapsed = time.perf_counter() - t0
    if reg is not None:
        reg.close()
    return batch_size * batches / elapsed


def toolkit_loop(model, batch_size: int, batches: int) -> float:
    n = batch_size * batches
    gen = torch.Generator().manual_seed(0)
    train = ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen),
                     torch.randint(0, 10, (n,), generator=gen), [str(i) for i in range(10)])
    test = ImageSet(train.images[:8], train.labels[:8], train.classes)
    recipe = Recipe.named("fast", epochs=1, batch_size=batch_size, lr=0.01, warmup_epochs=0.0)
    with tempfile.TemporaryDirectory() as d:
        result = fit(model, train, test, d, recipe, mean=[0.5] * 3, std=[0.25] * 3,
                     options=FitOptions(sparsity=1e-4, resume=False))
    return result["last"]["img_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="vgg19")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    torch.manual_seed(0)
    model = create_model(args.arch, width=args.width).to(memory_format=torch.channels_last)
    plain_loop(model, args.batch_size, 3)  # warm-up: allocator and kernels
    plain, toolkit, api_sub, api_prox = [], [], [], []
    for _ in range(args.repeats):  # interleaved so drift in machine speed hits all alike
        plain.append(plain_loop(model, args.batch_size, args.batches))
        api_sub.append(plain_loop(model, args.batch_size, args.batches, "subgradient"))
        api_prox.append(plain_loop(model, args.batch_size, args.batches, "proximal"))
        toolkit.append(toolkit_loop(model, args.batch_size, args.batches))
    print(f"{args.arch} width {args.width}, batch {args.batch_size}, {args.batches} batches x {args.repeats} "
          f"repeats, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, xs in (("plain PyTorch", plain), ("plain + API subgradient", api_sub),
                     ("plain + API proximal", api_prox), ("toolkit fit()", toolkit)):
        print(f"  {name:24s} img/s  median {statistics.median(xs):8.1f}  min {min(xs):8.1f}  max {max(xs):8.1f}")
    for name, xs in (("API subgradient / plain", api_sub), ("API proximal / plain", api_prox),
                     ("toolkit fit() / plain", toolkit)):
        r = [a / p for a, p in zip(xs, plain)]
        print(f"  {name:24s} median {statistics.median(r):.3f}  min {min(r):.3f}  max {max(r):.3f}")


if __name__ == "__main__":
    main()
