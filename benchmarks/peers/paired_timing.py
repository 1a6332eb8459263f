"""Latency of each method against the toolkit's, measured in interleaved blocks (a paired comparison).

    python benchmarks/peers/paired_timing.py runs/peers-quick/vgg19x0.25/seed0 --blocks 60 --iters 20

The timing phase (`run.py --phase time`) keeps each network's fastest round, which is fair only if every
network met the machine's fast state at least once: this VM switches between speed states 1.2–2× apart
within a minute. Here the methods are timed as `compress bench --paired` times artifacts
(compress.runtime.paired): every method's final network is loaded once per backend and batch, and the
methods take turns in short blocks (0.3–0.9 s on this VM), the same number of iterations each (at least
`--iters`, and 50 ms for the slowest), so that the ratio of each method's median to the toolkit's in the
same block cancels the machine's state. The report gives, per backend and batch, the median over blocks
of that ratio with a 95% interval (order statistics): a peer is faster than the toolkit where the
interval lies under 1, slower where it lies over 1, and level where it holds 1. The JSON also keeps the
blocks' own 5th–95th percentiles.

The networks are exported as `compress bench` exports them (ONNX opset 17, dynamic batch) and run by the
toolkit's runners with their default threads. The JSON goes to SEED_DIR/paired/timing.json (atomically);
the table is printed. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import atomic_json, machine  # noqa: E402
from layer_profile import _at_least  # noqa: E402

METHODS = ("toolkit", "tp-bnscale", "tp-groupnorm", "tp-l1")
REFERENCE = "toolkit"


def time_pairs(seed_dir: Path, methods: list[str], backends: list[str], batches: list[int], blocks: int,
               iters: int, warmup: int) -> dict:
    from compress.benchmarking import export_model_dir
    from compress.runtime.paired import check_blocks, interleave, ratios
    from compress.runtime.runners import check_backend, open_runner

    check_blocks(blocks)
    if REFERENCE not in methods:
        raise SystemExit(f"the methods must include {REFERENCE}, the reference of every ratio")
    for backend in backends:  # before any export: an unknown or missing backend is named at once
        check_backend(backend)
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for m in methods:
            final = seed_dir / m / "finetuned"
            if not (final / "model.json").is_file():
                if m == REFERENCE:
                    raise SystemExit(f"{final}/model.json is missing: nothing to compare with")
                print(f"skipped {m}: no {final}/model.json", file=sys.stderr)
                continue
            paths[m] = export_model_dir(final, Path(tmp) / f"{m}.onnx", lambda _msg: None)
        for backend in backends:
            runners = {}
            try:
                for m, path in paths.items():  # inside the try: those already open are closed on a failure
                    runners[m] = open_runner(path, backend)
                shape = runners[REFERENCE].input_shape
                for batch in batches:
                    x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
                    t0 = time.time()
                    samples, used, block_s = interleave(runners, {m: x for m in runners}, blocks, min_iters=iters,
                                                        warmup=warmup)
                    found[f"{backend}@{batch}"] = {"ratios": ratios(samples, REFERENCE), "samples_ms": samples,
                                                   "iters": used, "block_s": round(block_s, 3),
                                                   "wall_s": round(time.time() - t0, 1)}
            finally:
                for r in runners.values():
                    r.close()
    return found


def write(seed_dir: Path, found: dict, command: str, blocks: int, iters: int) -> Path:
    """SEED_DIR/paired/timing.json, atomically: in a folder of its own, so that the timing phase, which reads
    every SEED_DIR/*.json as a method's record, never takes it for one."""
    path = seed_dir / "paired" / "timing.json"
    atomic_json(path, {"machine": machine(), "written": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
                       "command": command, "blocks": blocks, "iters": iters, "cells": found})
    return path


def read(seed_dir: Path) -> dict:
    """{"BACKEND@BATCH": {method: ratios}} of a seed's paired timing; {} before it ran, or when a method's
    record is newer than it (a network retrained since: its verdict would be of another network)."""
    path = seed_dir / "paired" / "timing.json"
    if not path.exists():
        return {}
    records = [p for p in seed_dir.glob("*.json") if p.stem not in ("pretrained", "timing")]
    newer = [p.stem for p in records if p.stat().st_mtime > path.stat().st_mtime]
    if newer:
        print(f"{path}: older than the records of {', '.join(sorted(newer))}; not used (time again)", file=sys.stderr)
        return {}
    return {cell: v["ratios"] for cell, v in json.loads(path.read_text())["cells"].items()}


def table(found: dict) -> list[str]:
    cells = list(found)
    methods = list(next(iter(found.values()))["ratios"])
    lines = ["| method | " + " | ".join(f"{c}: median ms, × toolkit [95% CI]" for c in cells) + " |",
             "| --- | " + " | ".join("---" for _ in cells) + " |"]
    for m in methods:
        row = []
        for c in cells:
            r = found[c]["ratios"][m]
            lo, hi = r["ratio_ci95"]
            row.append(f"{r['median_ms']:.3f}, ×{r['ratio_median']:.3f} [{lo:.3f}–{hi:.3f}]")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return lines


def blocks_arg(text: str, zero_skips: bool = False) -> int:
    """An argparse type for a block count: compress.runtime.paired's bounds, or 0 where `zero_skips`."""
    from compress.runtime.paired import check_blocks

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of blocks, got {text!r}") from None
    try:
        return 0 if zero_skips and value == 0 else check_blocks(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"0 (no paired timing) or {exc}" if zero_skips else str(exc)) from None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed_dir", type=Path)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--backends", default="ort-cpu,openvino")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--blocks", type=blocks_arg, default=60, help="6 to 10000 (fewer give no 95%% interval)")
    ap.add_argument("--iters", type=_at_least(1), default=20,
                    help="least iterations per method per block (more where they take under 50 ms)")
    ap.add_argument("--warmup", type=_at_least(0), default=10)
    args = ap.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if any(b < 1 for b in batches):
        ap.error(f"--batches must be at least 1, got {args.batches!r}")
    if not args.seed_dir.is_dir():
        ap.error(f"no such run folder: {args.seed_dir}")
    from compress.errors import CompressError
    from compress.runtime.errors import RuntimeBenchError

    try:
        found = time_pairs(args.seed_dir, args.methods.split(","), args.backends.split(","), batches, args.blocks,
                           args.iters, args.warmup)
    except (CompressError, RuntimeBenchError, OSError, ValueError) as exc:
        raise SystemExit(f"paired_timing: {exc}") from None
    write(args.seed_dir, found, "python benchmarks/peers/paired_timing.py " + " ".join(
        sys.argv[1:] if argv is None else argv), args.blocks, args.iters)
    print("\n".join(table(found)))


if __name__ == "__main__":
    main()
