"""Slim a torchvision ResNet-18 inside your own training loop, with a plain PyTorch DataLoader.

    python examples/slim_resnet18.py --data path/to/images --out runs/r18-example
    python examples/slim_resnet18.py --data imgs --weights my_resnet18.pth --input-size 224 --epochs 5

`--data` is an ImageFolder tree with train/ and test/ (one folder per class). Without `--weights` the
network starts untrained. The steps are the method's: sparse training (L1 on BatchNorm γ, one call per
step), pruning by one global γ threshold, fine-tuning, then a model directory that every `compress`
command reads (`compress eval`, `compress bench`), and its parity-checked ONNX export.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms as T

import compress

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def loaders(root: Path, size: int, batch: int, workers: int):
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.35, 1)), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(MEAN, STD)])
    test_tf = T.Compose([T.Resize(round(size / 0.875)), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])
    train = torchvision.datasets.ImageFolder(str(root / "train"), train_tf)
    test = torchvision.datasets.ImageFolder(str(root / "test"), test_tf)
    return (DataLoader(train, batch, shuffle=True, num_workers=workers, drop_last=len(train) > batch),
            DataLoader(test, batch, num_workers=workers), train.classes)


def train_epoch(model, loader, optimizer, regularizer=None, max_steps=None):
    model.train()
    for step, (x, y) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        if regularizer is not None:
            regularizer.step(optimizer)  # the L1 penalty on BN γ: between backward() and step()
        optimizer.step()


@torch.no_grad()
def accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--weights", type=Path, default=None, help="a trained resnet18 state_dict (.pth)")
    ap.add_argument("--input-size", type=int, default=64,
                    help="at least 64: the model directory names the registry's resnet18, which keeps torchvision's "
                         "7x7 stem from 64 px up (below, it is the CIFAR 3x3 stem, another network)")
    ap.add_argument("--epochs", type=int, default=2, help="sparse-training epochs (and as many to fine-tune)")
    ap.add_argument("--percent", type=float, default=0.3, help="fraction of BN channels to prune")
    ap.add_argument("--sparsity", type=float, default=1e-4, help="λ of the L1 penalty on BN γ")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="stop each epoch after N steps (quick tries)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.input_size < 64:
        ap.error(f"--input-size must be at least 64 for torchvision's resnet18 stem, got {args.input_size}")

    train_loader, test_loader, classes = loaders(args.data, args.input_size, args.batch_size, args.workers)
    model = torchvision.models.resnet18(num_classes=len(classes))
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))

    # 1. Sparse training: your loop, plus one regularizer call per step.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    regularizer = compress.SparsityRegularizer(model, args.sparsity)
    for _ in range(args.epochs):
        train_epoch(model, train_loader, optimizer, regularizer, args.steps)
    sparse_acc = accuracy(model, test_loader)
    print(f"sparse model: {sparse_acc:.2%}")
    # The unpruned network, kept to show what pruning gained (step 5).
    saved = dict(arch="resnet18", arch_kwargs={"num_classes": len(classes), "image_size": args.input_size},
                 classes=classes, input_size=args.input_size, mean=MEAN, std=STD)
    compress.save_model(model, args.out / "sparse", accuracy=sparse_acc, **saved)

    # 2. Prune: one global γ threshold, channels physically removed; the plan can be replayed.
    example = torch.zeros(1, 3, args.input_size, args.input_size)
    # round_to="auto": kept widths in multiples of ONNX Runtime's CPU convolution block on this machine (16
    # with AVX-512, 8 with AVX2); arbitrary widths can run slower than the unpruned network there.
    plan = compress.prune(model, example, percent=args.percent, round_to="auto")
    args.out.mkdir(parents=True, exist_ok=True)
    plan.save(args.out / "plan.json")
    print(f"pruned: {plan}, {accuracy(model, test_loader):.2%} before fine-tuning")

    # 3. Fine-tune the smaller network, without the penalty.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    for _ in range(args.epochs):
        train_epoch(model, train_loader, optimizer, None, args.steps)
    acc = accuracy(model, test_loader)

    # 4. A model directory: rebuilt later from the registry name, its arguments and the recorded widths.
    meta = compress.save_model(model, args.out / "model", accuracy=acc, **saved)
    print(f"saved {args.out / 'model'}: {acc:.2%}, {meta['params']:,} params, {meta['macs']:,} MACs")

    # 5. ONNX for deployment, checked against the PyTorch model on the same inputs before it is kept.
    report = compress.export(args.out / "model", args.out / "model.onnx", log=print)
    print(f"next, how much faster on this machine (both timed in turns, with a 95% interval):\n"
          f"  compress bench {args.out / 'sparse'} {report['onnx']['path']} --batch 1,8 --paired 30")


if __name__ == "__main__":
    main()
