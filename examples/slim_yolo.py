"""Slim an ultralytics YOLO detector in your own training loop: sparse training with the detector's own
loss, pruning, fine-tuning, a parity-checked ONNX file, and its latency next to the unpruned network.

    python examples/slim_yolo.py --data path/to/yolo-dataset --classes person,car --out runs/yolo-example
    python examples/slim_yolo.py --data ds --classes person,car --cfg yolo11n.yaml --weights sd.pt --size 640

`--data` holds images/ and labels/ in YOLO's format (one `class cx cy w h` line per box, normalized to
[0, 1]; a label file shares its image's stem). `--weights` is a state dict of the same model, read with
weights_only=True; from a trained ultralytics checkpoint, make one in your own trusted environment with
`torch.save(YOLO("best.pt").model.float().state_dict(), "sd.pt")`. ultralytics (AGPL-3.0) is yours to
install; this toolkit imports it only where you have it. Images are resized to a square, without
letterboxing, to keep the loader short; boxes normalized to the image stay right under that resize.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor, resize
from ultralytics.nn.tasks import DetectionModel

import compress

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def load_dataset(root: Path, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 image 3×size×size, boxes N×5 of class cx cy w h) for every image of a YOLO-format folder."""
    items = []
    for image in sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        with Image.open(image) as im:
            pixels = resize(pil_to_tensor(im.convert("RGB")), [size, size], antialias=True)
        label = root / "labels" / f"{image.stem}.txt"
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()] if label.exists() else []
        items.append((pixels, torch.tensor([[float(v) for v in r] for r in rows]).reshape(-1, 5)))
    if not items:
        raise SystemExit(f"{root / 'images'}: no images")
    return items


def batches(items, batch_size: int, generator: torch.Generator):
    """YOLO's batch dict: images in [0, 1], and every box with the index of its image."""
    order = torch.randperm(len(items), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        chosen = [items[i] for i in order[start:start + batch_size]]
        boxes = [b for _, b in chosen]
        yield {"img": torch.stack([im for im, _ in chosen]).float() / 255,
               "batch_idx": torch.cat([torch.full((len(b),), float(i)) for i, b in enumerate(boxes)]),
               "cls": torch.cat([b[:, :1] for b in boxes]), "bboxes": torch.cat([b[:, 1:] for b in boxes])}


def train(model, items, epochs: int, batch_size: int, lr: float, regularizer=None, max_steps=None) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    model.criterion = None  # the loss binds the head's shapes: rebuilt after pruning
    loss = torch.zeros(())
    for _ in range(epochs):
        for step, batch in enumerate(batches(items, batch_size, generator)):
            if max_steps is not None and step >= max_steps:
                break
            loss, _ = model.loss(batch)
            optimizer.zero_grad()
            loss.sum().backward()
            if regularizer is not None:
                regularizer.step(optimizer)  # L1 on BN γ: between backward() and step()
            optimizer.step()
    return float(loss.detach().sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--classes", required=True, help="class names, comma-separated, in label order")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cfg", default="yolov8n.yaml", help="an ultralytics model yaml (yolov8n.yaml, yolo11n.yaml)")
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=2, help="sparse-training epochs (and as many to fine-tune)")
    ap.add_argument("--percent", type=float, default=0.3, help="fraction of BN channels to prune")
    ap.add_argument("--sparsity", type=float, default=1e-4, help="λ of the L1 penalty on BN γ")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=None, help="stop each epoch after N steps (quick tries)")
    ap.add_argument("--bench-iters", type=int, default=50)
    ap.add_argument("--paired-blocks", type=int, default=30, help="blocks of the paired timing (at least 6)")
    args = ap.parse_args()

    classes = args.classes.split(",")
    model = DetectionModel(args.cfg, nc=len(classes), verbose=False)
    model.names = dict(enumerate(classes))
    model.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)  # ultralytics' default loss gains
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    items = load_dataset(args.data, args.size)
    saved = dict(input_size=args.size, mean=[0.0] * 3, std=[1.0] * 3)  # YOLO reads pixels / 255

    # 1. Sparse training with the detector's own loss, plus one regularizer call per step.
    regularizer = compress.SparsityRegularizer(model, args.sparsity)
    loss = train(model, items, args.epochs, args.batch_size, args.lr, regularizer, args.steps)
    print(f"sparse training: last loss {loss:.3f}")
    compress.save_model(model.eval(), args.out / "sparse", **saved)

    # 2. Prune by one global γ threshold. C2f/C3k2 chunk their convolutions in halves: the halves stay
    #    equal; the Detect head's outputs keep their shapes. The self-check compares every output.
    #    round_to="auto": widths in multiples of ONNX Runtime's CPU convolution block here.
    plan = compress.prune(model.eval(), torch.zeros(1, 3, args.size, args.size), percent=args.percent,
                          round_to="auto")
    print(f"pruned: {plan}; self-check {plan.check['max_relative_difference']:.1e} "
          f"(tolerance {plan.check['tolerance']:.0e})")

    # 3. Fine-tune without the penalty; save a model directory (ultralytics' DetectionModel and its cfg).
    loss = train(model, items, args.epochs, args.batch_size, args.lr / 10, None, args.steps)
    meta = compress.save_model(model.eval(), args.out / "model", **saved)
    print(f"fine-tuned: last loss {loss:.3f}; saved {args.out / 'model'}: {meta['params']:,} params, "
          f"{meta['macs']:,} MACs")

    # 4. ONNX with parity on every output (boxes and scores; no NMS is added), then both timed on this CPU.
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
