"""BN re-estimation with and without the training augmentation, on trained networks, no channel removed.

    COMPRESS_DATA=/path/to/cifar10-jpeg.tar.gz OMP_NUM_THREADS=1 \
        python benchmarks/bn_recalibration.py MODEL_DIR [MODEL_DIR ...] --out benchmarks/results/bn_recal.md

The prune stage re-estimates BN running statistics after an inexact pruning. Whatever pruning did, the
re-estimation alone should leave a trained network's accuracy where it was; this measures that for each
model directory: its test accuracy as trained, then after re-estimating every BN on N stratified training
images, plain (as evaluation sees them) and augmented as in training (three augmentation seeds, mean and
range).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from common import machine  # noqa: E402


def measure(model_dir: Path, data_spec: str, images: int, test_limit: int, train_limit: int) -> dict:
    import compress
    from compress.data import stratified_subset
    from compress.data.options import DataOptions
    from compress.slimming import recalibrate_batchnorm
    from compress.training import evaluate

    model, meta = compress.load_model(model_dir)
    data = DataOptions(data_spec, train_limit=train_limit, test_limit=test_limit).for_model(meta)
    test, norm = data.split("test"), meta["normalization"]
    calib = stratified_subset(data.split("train"), images, seed=0)

    def accuracy_after(train: bool, seed: int = 0) -> float:
        m = copy.deepcopy(model)
        batches = (x for x, _ in calib.batches(250, norm["mean"], norm["std"], train=train, seed=seed))
        recalibrate_batchnorm(m, batches)
        return evaluate(m, test, norm["mean"], norm["std"])["accuracy"]

    augmented = [accuracy_after(True, seed) for seed in (0, 1, 2)]
    return {"model": str(model_dir), "arch": meta.get("arch"), "test_images": len(test),
            "calibration_images": len(calib),
            "as_trained": evaluate(model, test, norm["mean"], norm["std"])["accuracy"],
            "plain": accuracy_after(False), "augmented": augmented}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--images", type=_positive, default=2000, help="calibration images (the prune stage's default)")
    ap.add_argument("--train-limit", type=_positive, default=10000)
    ap.add_argument("--test-limit", type=_positive, default=10000)
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = ap.parse_args(argv)
    if args.out is not None:
        inside = [m for m in args.models if args.out.resolve().is_relative_to(m.resolve())]
        if inside:
            ap.error(f"--out {args.out} is inside the model directory {inside[0]}, an input")
    from compress.errors import CompressError

    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    rows = []
    try:
        for model_dir in args.models:
            r = measure(model_dir, args.data, args.images, args.test_limit, args.train_limit)
            aug = r["augmented"]
            rows.append(f"| {model_dir} | {r['arch']} | {r['test_images']} | {r['as_trained']:.2%} | "
                        f"{r['plain']:.2%} | {sum(aug) / len(aug):.2%} ({min(aug):.2%}–{max(aug):.2%}) |")
            print(rows[-1], flush=True)
    except CompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = ["# BN re-estimation alone, plain against augmented images", "",
             f"Command: `python benchmarks/bn_recalibration.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine()}  ", f"Run: {started} – {time.strftime('%H:%M', time.gmtime())} UTC", "",
             "| model | arch | test images | as trained | re-estimated, plain | re-estimated, augmented (3 seeds) |",
             "| --- | --- | ---: | ---: | ---: | ---: |", *rows, "",
             f"Each re-estimation: {args.images} stratified training images (seed 0), batches of 250, every "
             "BN's running statistics reset and averaged over the batches in train mode; no channel removed."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
