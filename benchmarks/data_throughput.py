"""Training img/s of VGG-19 ×0.25 fed from the in-memory uint8 cache vs streaming DataLoader workers.

    python benchmarks/data_throughput.py --threads 1 --images 4096 --batch 32 --steps 200 --loader-batches 150

Data: a stratified sample of CIFAR-10's training split (the archive named by COMPRESS_DATA), written into
a temporary folder as JPEGs at 32 px (the original files) and at 64 px (upscaled, quality 90); the
folder is deleted at the end. For each input size and path it measures
  * loader: batches alone (decode, augment, normalize), img/s per window of 10 batches;
  * train: img/s of each SGD step (forward, backward, update, including the wait for its batch).
Each prints the median with the 10th–90th percentile range. Augmentation: pad-crop + flip at 32 px,
random-resized crop + flip at 64 px (whole-batch tensor ops in memory, torchvision v2 in workers).

The CIFAR VGG head (AvgPool2d(2) after four pools) assumes 32 px inputs; here it is swapped for a
global average pool, which is the same operation at 32 px, so the 64 px model runs.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from compress.data import load_dataset, stratified_indices
from compress.data.stream import default_workers
from compress.models import create_model


def make_folder(archive: Path, root: Path, n: int, size: int) -> int:
    """Write n stratified CIFAR-10 training JPEGs (test split: n // 8) at `size` px under root."""
    from PIL import Image

    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith(".jpg")]
        written = 0
        for split, count in (("train", n), ("test", max(n // 8, 10))):
            mine = sorted((m for m in members if f"/{split}/" in f"/{m.name}"), key=lambda m: m.name)
            classes = sorted({Path(m.name).parent.name for m in mine})
            labels = torch.tensor([classes.index(Path(m.name).parent.name) for m in mine])
            for i in stratified_indices(labels, count, seed=0).tolist():
                m = mine[i]
                data = tar.extractfile(m).read()
                out = root / split / Path(m.name).parent.name / Path(m.name).name
                out.parent.mkdir(parents=True, exist_ok=True)
                if size == 32:
                    out.write_bytes(data)
                else:
                    img = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BICUBIC)
                    img.save(out, quality=90)
                written += 1
    return written


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=10, method="inclusive") if len(values) >= 2 else [values[0]] * 9
    return f"{statistics.median(values):7.0f} img/s  (p10 {q[0]:.0f}, p90 {q[-1]:.0f}, n={len(values)})"


def loader_rates(data, batch: int, batches: int, mean, std) -> list[float]:
    it = data.batches(batch, mean, std, train=True, seed=0, channels_last=True, drop_last=True)
    rates, done, epoch = [], 0, 0
    while done < batches:
        it.set_epoch(epoch)
        t0, count = time.perf_counter(), 0
        for i, (x, _) in enumerate(it):
            count += x.shape[0]
            done += 1
            if (i + 1) % 10 == 0:
                rates.append(count / (time.perf_counter() - t0))
                t0, count = time.perf_counter(), 0
            if done >= batches:
                break
        epoch += 1
    return rates[1:] or rates  # the first window includes worker start-up


def train_rates(data, size: int, batch: int, steps: int, warmup: int, mean, std) -> list[float]:
    torch.manual_seed(0)
    model = create_model("vgg19", num_classes=10, width=0.25)
    model.pool = torch.nn.AdaptiveAvgPool2d(1)
    model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    it = data.batches(batch, mean, std, train=True, seed=0, channels_last=True, drop_last=True)
    rates, step, epoch = [], 0, 0
    while step < warmup + steps:
        it.set_epoch(epoch)
        t0 = time.perf_counter()
        for x, y in it:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t1 = time.perf_counter()
            if step >= warmup:
                rates.append(x.shape[0] / (t1 - t0))
            t0 = t1
            step += 1
            if step >= warmup + steps:
                break
        epoch += 1
    return rates


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")
    flags = sorted({f for f in ("avx2", "avx512f", "avx512_vnni") if f" {f} " in f" {lscpu} "})
    return f"{model}, {os.cpu_count()} CPUs, flags {' '.join(flags) or 'none of avx2/avx512f/avx512_vnni'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096, help="training images per folder")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per size and path")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--loader-batches", type=int, default=120, help="batches timed for the loader alone")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for training (default: torch's)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: compress's)")
    ap.add_argument("--sizes", default="32,64")
    args = ap.parse_args()
    archive = os.environ.get("COMPRESS_DATA")
    if not archive or not Path(archive).is_file():
        sys.exit("set COMPRESS_DATA to cifar10-jpeg.tar.gz")
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = default_workers() if args.workers is None else args.workers
    print(f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    print(f"date: {datetime.date.today()}  machine: {machine()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"{workers} DataLoader workers, batch {args.batch}, VGG-19 x0.25, channels_last, CPU")
    tmp = Path(tempfile.mkdtemp(prefix="compress-data-bench-"))
    os.environ["COMPRESS_CACHE"] = str(tmp / "cache")
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            root = tmp / f"cifar{size}"
            t0 = time.perf_counter()
            n = make_folder(Path(archive), root, args.images, size)
            print(f"\n{size} px: {n} JPEGs written to a temporary folder in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            memory = load_dataset(str(root), "train", input_size=size, mode="memory")
            decode_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            memory = load_dataset(str(root), "train", input_size=size, mode="memory")
            print(f"  memory: first load (decode + cache write) {decode_s:.1f} s, cached load "
                  f"{time.perf_counter() - t0:.2f} s, {memory.stored.numel() / 1e6:.0f} MB")
            stream = load_dataset(str(root), "train", input_size=size, mode="stream", workers=workers)
            for name, data in (("memory", memory), ("stream", stream)):
                print(f"  {name:6s} loader {spread(loader_rates(data, args.batch, args.loader_batches, mean, std))}",
                      flush=True)
            for name, data in (("memory", memory), ("stream", stream)):
                rates = train_rates(data, size, args.batch, args.steps, args.warmup, mean, std)
                print(f"  {name:6s} train  {spread(rates)}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
