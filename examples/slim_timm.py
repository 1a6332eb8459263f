"""Slim a timm network in your own training loop, then export it and time it against the unpruned one.

    python examples/slim_timm.py --data path/to/images --out runs/timm-example
    python examples/slim_timm.py --data imgs --model efficientnet_b0 --weights b0.safetensors --input-size 224

`--data` is an ImageFolder tree with train/ and test/ (one folder per class). `--weights` is a state dict
of the same timm model (.safetensors, or a .pth read with weights_only=True); without it the network
starts untrained. No wrapper class is needed: `compress.save_model` records timm's `create_model` with the
model's name, and the directory rebuilds without importing anything else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
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


def load_weights(model: torch.nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # A checkpoint trained for other classes keeps its backbone; the classifier starts anew.
    head = model.get_classifier()
    for name, tensor in head.state_dict().items():
        key = f"{model.pretrained_cfg.get('classifier', 'fc')}.{name}"
        if key in state and state[key].shape != tensor.shape:
            del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    print(f"loaded {path}: {len(missing)} tensors left as initialised, {len(unexpected)} ignored")


def run_epoch(model, loader, optimizer, regularizer=None, max_steps=None):
    model.train()
    for step, (x, y) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        if regularizer is not None:
            regularizer.step(optimizer)  # L1 on BN γ: between backward() and step()
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
    ap.add_argument("--model", default="mobilenetv3_large_100", help="any timm CNN with BatchNorm")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2, help="sparse-training epochs (and as many to fine-tune)")
    ap.add_argument("--percent", type=float, default=0.3, help="fraction of BN channels to prune")
    ap.add_argument("--sparsity", type=float, default=1e-4, help="λ of the L1 penalty on BN γ")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=None, help="stop each epoch after N steps (quick tries)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bench-iters", type=int, default=50)
    ap.add_argument("--paired-blocks", type=int, default=30, help="blocks of the paired timing (at least 6)")
    args = ap.parse_args()

    train_loader, test_loader, classes = loaders(args.data, args.input_size, args.batch_size, args.workers)
    model = timm.create_model(args.model, pretrained=False, num_classes=len(classes))
    if args.weights:
        load_weights(model, args.weights)
    size = args.input_size
    saved = dict(classes=classes, input_size=size, mean=MEAN, std=STD)

    # 1. Sparse training: your loop, plus one regularizer call per step.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
    regularizer = compress.SparsityRegularizer(model, args.sparsity)
    for _ in range(args.epochs):
        run_epoch(model, train_loader, optimizer, regularizer, args.steps)
    sparse_acc = accuracy(model, test_loader)
    compress.save_model(model, args.out / "sparse", accuracy=sparse_acc, **saved)

    # 2. Prune by one global γ threshold; the library checks the pruned network against the unpruned one
    #    (timm's fused BatchNormAct2d, MixedConv2d splits and squeeze-excitation gates included).
    #    round_to="auto" keeps widths in multiples of ONNX Runtime's CPU convolution block here: with
    #    arbitrary widths this network ran 1.7x slower than the unpruned one (2026-12-07, AVX2 CPU).
    plan = compress.prune(model.eval(), torch.zeros(1, 3, size, size), percent=args.percent, round_to="auto")
    exact = plan.check["float64"]  # the same comparison with both networks in float64, or why it could not run
    exact_text = (f"{exact['max_relative_difference']:.1e}" if "max_relative_difference" in exact
                  else f"not run: {exact['not_run']}")
    print(f"pruned: {plan}; self-check {plan.check['max_relative_difference']:.1e} "
          f"(tolerance {plan.check['tolerance']:.0e}; in float64 {exact_text}), "
          f"{accuracy(model, test_loader):.2%} before fine-tuning")

    # 3. Fine-tune the smaller network without the penalty, and keep it as a model directory.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
    for _ in range(args.epochs):
        run_epoch(model, train_loader, optimizer, None, args.steps)
    acc = accuracy(model, test_loader)
    meta = compress.save_model(model, args.out / "model", accuracy=acc, **saved)
    print(f"saved {args.out / 'model'} ({meta['arch']}, {meta['arch_kwargs']['model_name']}): {acc:.2%}, "
          f"{meta['params']:,} params, {meta['macs']:,} MACs")

    # 4. Parity-checked ONNX, then both networks timed the same way on this machine's CPU.
    compress.export(args.out / "model", args.out / "model.onnx", log=print)
    #    Two separate p50s on a busy machine can say "slower" for a faster network: the paired pass times
    #    both again in turns and gives the pruned one's time over the unpruned one's, with a 95% interval.
    settings = compress.BenchSettings(backend="ort-cpu", batches=(1,), iters=args.bench_iters,
                                      paired_blocks=args.paired_blocks)
    report = compress.bench([args.out / "sparse", args.out / "model.onnx"], settings, log=lambda _m: None)
    for v in report["variants"]:
        row = next((r for r in v["latency"] if r.get("status") == "ok"), None)
        p50 = f"{row['end_to_end']['p50_ms']:.2f} ms" if row else v.get("error")
        print(f"{v['name']}: batch 1 p50 {p50}")
    for section in report["paired"]:
        for row in section["rows"][1:]:
            lo, hi = row["ratio_ci95"]
            print(f"{row['name']}: ×{row['ratio_median']:.3f} of {section['reference']}'s time at batch "
                  f"{section['batch']} (95% interval {lo:.3f}–{hi:.3f}, {section['blocks']} blocks in turns): "
                  f"{row['verdict']}")


if __name__ == "__main__":
    main()
