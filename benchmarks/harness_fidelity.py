"""Does the harness measure what a bare ONNX Runtime loop measures? Same model, same process, batch 1.

The bare loop is the floor: an InferenceSession on the CPU provider, `sess.run` in a plain loop
timed with time.perf_counter. The harness is `compress.runtime.bench.bench_variant` with the ort-cpu backend,
exactly what `compress bench` runs. Both make a fresh session every round and alternate which goes
first, so drift in the machine's load hits both alike; each round times the same number of
iterations after the same warm-up, with the same intra-op thread setting. One extra round runs first
and is not counted: the first session in a fresh process (right after torch exported the model)
ran measurably faster than every later one, for both loops, which would otherwise favour whichever
loop happens to go first.

    python benchmarks/harness_fidelity.py                      # exports VGG-19 (width 1.0) first
    python benchmarks/harness_fidelity.py model.onnx --iters 300 --rounds 5

Prints p50, min, max and std of both (over all timed iterations), the per-round p50 ratio range,
and the ratio harness p50 / bare p50. The target is within 5% (0.95-1.05).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def export_vgg19(out: Path, width: float) -> Path:
    from compress.exporting.onnx_export import export_onnx
    from compress.models import create_model

    meta = {"classes": [f"class{i}" for i in range(10)], "mean": [0.4914, 0.4822, 0.4465],
            "std": [0.247, 0.2435, 0.2616], "input_size": [3, 32, 32], "arch": "vgg19", "precision": "fp32",
            "source_sha256": "0" * 64, "toolkit_version": "0.1.0"}
    return export_onnx(create_model("vgg19", num_classes=10, width=width), out, input_size=[3, 32, 32],
                       metadata=meta)


def bare_loop(path: Path, x: np.ndarray, warmup: int, iters: int, threads: int | None) -> list[float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def harness_loop(path: Path, warmup: int, iters: int, threads: int | None) -> tuple[dict, dict]:
    """The harness's own statistics for batch 1 (and its whole report row)."""
    from compress.runtime.bench import BenchSettings, bench_variant

    settings = BenchSettings(backend="ort-cpu", batches=(1,), warmup=warmup, iters=iters, power="none",
                             threads=threads)
    row = bench_variant(path, settings, log=lambda _m: None)
    if row["status"] != "ok":
        raise SystemExit(f"harness failed: {row['error'] or row['latency']}")
    return row["latency"][0]["end_to_end"], row


def describe(samples: list[float]) -> str:
    return (f"p50 {statistics.median(samples):.3f} ms, min {min(samples):.3f}, max {max(samples):.3f}, "
            f"std {statistics.stdev(samples):.3f} (n={len(samples)})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="?", type=Path, help="ONNX file (default: export VGG-19 to a temp dir)")
    parser.add_argument("--width", type=float, default=1.0, help="VGG-19 width when exporting")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for both (default: ORT's)")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from compress.runtime.accuracy import normalize
    from compress.runtime.sysinfo import cpu_model

    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx or export_vgg19(Path(tmp) / "vgg19.onnx", args.width)
        rng = np.random.default_rng(0)
        # The harness feeds seeded random uint8 images normalized the same way; content does not change CPU time.
        x = normalize(rng.integers(0, 256, size=(1, 3, 32, 32), dtype=np.uint8), [0.49, 0.48, 0.45],
                      [0.25, 0.24, 0.26])
        bare_all, harness_p50s, bare_p50s, harness_stats = [], [], [], []
        for r in range(-1, args.rounds):
            if r % 2 == 0:
                bare = bare_loop(path, x, args.warmup, args.iters, args.threads)
                stats, _row = harness_loop(path, args.warmup, args.iters, args.threads)
            else:
                stats, _row = harness_loop(path, args.warmup, args.iters, args.threads)
                bare = bare_loop(path, x, args.warmup, args.iters, args.threads)
            if r < 0:
                print(f"process warm-up round (not counted): bare p50 {statistics.median(bare):.3f} ms, "
                      f"harness p50 {stats['p50_ms']:.3f} ms", flush=True)
                continue
            bare_all += bare
            bare_p50s.append(statistics.median(bare))
            harness_p50s.append(stats["p50_ms"])
            harness_stats.append(stats)
            print(f"round {r + 1}: bare p50 {bare_p50s[-1]:.3f} ms, harness p50 {harness_p50s[-1]:.3f} ms, "
                  f"ratio {harness_p50s[-1] / bare_p50s[-1]:.3f}", flush=True)

    ratios = [h / b for h, b in zip(harness_p50s, bare_p50s)]
    harness_p50 = statistics.median(harness_p50s)
    bare_p50 = statistics.median(bare_p50s)
    print()
    print(f"model: {path if args.onnx else f'VGG-19 width {args.width} (exported here)'}, batch 1, "
          f"{args.rounds} rounds x {args.iters} iterations, warm-up {args.warmup}, "
          f"intra-op threads {args.threads or 'onnxruntime default'}")
    print(f"machine: {cpu_model()}, {platform.platform()}, onnxruntime {ort.__version__}, "
          f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"bare ONNX Runtime loop (all rounds): {describe(bare_all)}")
    print("harness (per round):    " + ", ".join(f"p50 {s['p50_ms']:.3f}/min {s['min_ms']:.3f}/max {s['max_ms']:.3f}"
                                             f"/std {s['std_ms']:.3f}" for s in harness_stats))
    print(f"median of round p50s: bare {bare_p50:.3f} ms, harness {harness_p50:.3f} ms")
    print(f"ratio harness / bare (median of rounds): {statistics.median(ratios):.3f} "
          f"(rounds: {min(ratios):.3f} .. {max(ratios):.3f})")
    ok = 0.95 <= statistics.median(ratios) <= 1.05
    print("within 5%: " + ("yes" if ok else "NO"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
