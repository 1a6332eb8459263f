"""Latency of each method against the toolkit's, measured in interleaved blocks (a paired comparison).

    python benchmarks/peers/paired_timing.py runs/peers-quick/vgg19x0.25/seed0 --blocks 60 --iters 20

The timing phase (`run.py --phase time`) keeps each network's fastest round, which is fair only if every
network met the machine's fast state at least once: this VM switches between speed states 1.2–2× apart
within a minute. Here every method's final network is loaded once per backend and batch, and the methods
run in turn, at least `--iters` iterations each and at least 50 ms, after 2 warm-up runs and a 50 ms pause
(ONNX Runtime's threads spin after a run, and would otherwise slow the next method), for `--blocks` blocks
(the order rotates every block and reverses every other one). A block takes under a second, so the methods
of one block mostly meet the same state, and the ratio of each method's median to the toolkit's in that
block cancels it. The report gives, per backend and batch, the median over blocks of that ratio with a 95%
bootstrap interval: a peer is faster than the toolkit where the interval lies under 1, slower where it
lies over 1, and level where it holds 1. The JSON also keeps the blocks' own 5th–95th percentiles.

The networks are exported as `compress bench` exports them (ONNX opset 17, dynamic batch) and run by the
toolkit's runners with their default threads. The JSON goes to SEED_DIR/paired/timing.json (atomically);
the table is printed. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
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
# Between two methods: ONNX Runtime's pool threads spin-wait after a run, and the threads of the session
# that ran last would otherwise compete with the next one's (block ratios then spread 0.6-1.6x at batch 1).
SETTLE_S = 0.05
BLOCK_S = 0.05  # the least time one method runs per block: a batch-1 run of 0.15 ms alone is mostly noise


def blocks_of(runners: dict, x: np.ndarray, blocks: int, iters: int, warmup: int,
              block_s: float = BLOCK_S) -> tuple[dict[str, list[float]], int]:
    """({method: [median ms of each block]}, iterations per block), the methods interleaved within each
    block; at least `iters` iterations, more where that takes under `block_s` seconds."""
    order = list(runners)
    out: dict[str, list[float]] = {m: [] for m in order}
    slowest = 0.0
    for runner in runners.values():
        slowest = max(slowest, statistics.median(runner.measure(x, warmup=warmup, iters=5).end_to_end_ms))
    iters = max(iters, math.ceil(block_s * 1e3 / max(slowest, 1e-3)))
    for b in range(blocks):
        k = b % len(order)
        sequence = order[k:] + order[:k]
        if b % 2:
            sequence = sequence[::-1]
        for m in sequence:
            time.sleep(SETTLE_S)
            out[m].append(statistics.median(runners[m].measure(x, warmup=2, iters=iters).end_to_end_ms))
    return out, iters


def ratios(samples: dict[str, list[float]], reference: str = REFERENCE, resamples: int = 2000) -> dict[str, dict]:
    """Per method, over blocks, its time over the reference's: the median, a 95% bootstrap interval of that
    median (`ci95`), and the 5th and 95th percentiles of the blocks themselves."""
    ref = np.asarray(samples[reference])
    rng = np.random.default_rng(0)
    out = {}
    for m, values in samples.items():
        r = np.asarray(values) / ref
        boot = np.median(r[rng.integers(0, len(r), (resamples, len(r)))], axis=1)
        out[m] = {"median_ms": float(np.median(values)), "ratio_median": float(np.median(r)),
                  "ratio_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                  "ratio_p05": float(np.percentile(r, 5)), "ratio_p95": float(np.percentile(r, 95))}
    return out


def time_pairs(seed_dir: Path, methods: list[str], backends: list[str], batches: list[int], blocks: int,
               iters: int, warmup: int) -> dict:
    from compress.benchmarking import export_model_dir
    from compress.runtime.runners import check_backend, open_runner

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
            runners = {m: open_runner(p, backend) for m, p in paths.items()}
            try:
                shape = runners[REFERENCE].input_shape
                for batch in batches:
                    x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
                    t0 = time.time()
                    samples, used = blocks_of(runners, x, blocks, iters, warmup)
                    found[f"{backend}@{batch}"] = {"ratios": ratios(samples), "samples_ms": samples, "iters": used,
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
    """{"BACKEND@BATCH": {method: ratios}} of a seed's paired timing, or {} before it ran."""
    path = seed_dir / "paired" / "timing.json"
    if not path.exists():
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed_dir", type=Path)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--backends", default="ort-cpu,openvino")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--blocks", type=_at_least(2), default=60)
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
