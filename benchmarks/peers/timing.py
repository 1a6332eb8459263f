"""The latency phase: every method's final network on ONNX Runtime and OpenVINO (CPU), batch 1 and 32.

Run it alone on a quiet machine (`--phase time`): one `compress bench` per network and seed times all of
that seed's final model directories (exported to ONNX, opset 17, by the harness), `--rounds` times
(2 by default), in the methods' order and reversed in turn, so that drift in the machine's speed does
not favour whoever runs first. The figure kept is the fastest of the rounds' p50s (`kept`): this VM
switches between two speed states about 2x apart (2026-12-05: six rounds of every method split between
~0.6 and ~1.3 ms at batch 1), so the median says which state a cell happened to meet, while the fastest
round is each network in the machine's fast state; the medians are recorded too (`median_ms`).
OUT/NET/seedS/timing.json holds them, and the table takes them from there. Then each seed is timed again
with the methods interleaved in short blocks (paired_timing.py, OUT/NET/seedS/paired/timing.json),
which cancels drift that slows every method alike: the table's deployed-speed verdict comes from those ratios.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import atomic_json

BACKENDS = "ort-cpu,openvino"
BATCHES = "1,32"
# Rounds of one cell further apart than this mean the machine's speed moved under the timing (a 1.6x spread
# on a shared VM, 2026-12-05); such a cell is named in timing.json and the table, not quietly kept.
STEADY = 1.10
# Blocks of the paired timing that follows the rounds (paired_timing.py): 60 take about 2 minutes per seed of
# the quick scale's VGG-19 x0.25 and gave 95% intervals 0.2-2.7% wide on the ratios (2026-12-05).
PAIRED_BLOCKS = 60


def unsteady(samples: dict[str, dict[str, list[float]]], tolerance: float = STEADY) -> dict[str, float]:
    """{"METHOD BACKEND@BATCH": max/min of its rounds} for every cell whose rounds disagree beyond `tolerance`."""
    out = {}
    for method, cells in samples.items():
        for key, values in cells.items():
            if len(values) > 1 and min(values) > 0 and max(values) / min(values) > tolerance:
                out[f"{method} {key}"] = round(max(values) / min(values), 2)
    return out


def kept(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """{method: {"BACKEND@BATCH": the fastest round's p50}}: the network in the machine's fast state."""
    return {m: {key: min(v) for key, v in cells.items()} for m, cells in samples.items()}


def _bench(dirs: list[Path], iters: int, log: Path) -> dict:
    cmd = [sys.executable, "-m", "compress.cli", "bench", *map(str, dirs), "--backend", BACKENDS, "--batch",
           BATCHES, "--iters", str(iters), "--json"]
    with open(log, "a") as err:
        err.write(f"\n$ {' '.join(cmd)}\n")
        err.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compress bench failed (exit {proc.returncode}); see {log}")
    return json.loads(proc.stdout)


def p50s(report: dict) -> dict[str, dict[str, float]]:
    """{artifact path: {"BACKEND@BATCH": p50 ms}} of a `compress bench` report; failures are left out."""
    out: dict[str, dict[str, float]] = {}
    for variant in report["variants"]:
        if variant.get("status") != "ok":
            continue
        cells = out.setdefault(str(Path(variant["artifact"])), {})
        for row in variant.get("latency") or []:
            if row.get("status") == "ok":
                cells[f"{variant['backend']}@{row['batch']}"] = row["end_to_end"]["p50_ms"]
    return out


def time_seed(where: Path, iters: int, rounds: int = 2) -> dict:
    """Time every finished method of one seed; {method: {"BACKEND@BATCH": fastest round's p50 ms}}."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(where.glob("*.json"))
               if p.stem not in ("pretrained", "timing")}
    dirs = {m: where / r["final_dir"] for m, r in records.items()}
    order = list(dirs)
    samples: dict[str, dict[str, list[float]]] = {m: {} for m in order}
    by_path = {str(d): m for m, d in dirs.items()}
    for k in range(rounds):
        sequence = order if k % 2 == 0 else order[::-1]
        for path, cells in p50s(_bench([dirs[m] for m in sequence], iters, where / "timing.log")).items():
            for key, ms in cells.items():
                samples[by_path[path]].setdefault(key, []).append(ms)
    result = kept(samples)
    shaky = unsteady(samples)
    if shaky:
        print(f"{where}: the rounds of {len(shaky)} cells disagree by more than {STEADY - 1:.0%} (worst "
              f"{max(shaky.values())}x): the machine was not quiet; time again", file=sys.stderr)
    medians = {m: {key: statistics.median(v) for key, v in cells.items()} for m, cells in samples.items()}
    atomic_json(where / "timing.json", {"iters": iters, "rounds": rounds, "kept": "fastest round", "p50_ms": result,
                                        "median_ms": medians, "samples": samples, "unsteady": shaky})
    return result


def time_all(cfg: dict, out: Path, args) -> None:
    for net in cfg["nets"]:
        for seed in cfg["seeds"]:
            where = out / net / f"seed{seed}"
            if not (where / "toolkit.json").exists():
                print(f"{where}: nothing trained yet; skipped", file=sys.stderr)
                continue
            print(f"== timing {net} seed {seed}", file=sys.stderr, flush=True)
            time_seed(where, args.iters, getattr(args, "rounds", 2))
            blocks = getattr(args, "paired_blocks", None)
            blocks = PAIRED_BLOCKS if blocks is None else blocks
            if blocks > 0:
                time_paired(where, blocks)
            else:  # an earlier pass's ratios would otherwise decide the verdict for networks timed anew now
                (where / "paired" / "timing.json").unlink(missing_ok=True)


def time_paired(where: Path, blocks: int, iters: int = 20) -> dict:
    """Every finished method of one seed against the toolkit, interleaved (paired_timing.py)."""
    import paired_timing

    methods = [p.stem for p in sorted(where.glob("*.json")) if p.stem not in ("pretrained", "timing")]
    found = paired_timing.time_pairs(where, methods, BACKENDS.split(","), [int(b) for b in BATCHES.split(",")],
                                     blocks, iters, warmup=10)
    paired_timing.write(where, found, f"run.py --phase time (paired, --blocks {blocks} --iters {iters})", blocks,
                        iters)
    return found


def unsteady_of(where: Path) -> dict[str, float]:
    """The cells of one seed whose timing rounds disagreed (see STEADY), or {}."""
    path = where / "timing.json"
    return unsteady(json.loads(path.read_text()).get("samples", {})) if path.exists() else {}


def latency_of(where: Path) -> dict[str, dict[str, float]]:
    """The timing phase's figures for one seed, {method: {"BACKEND@BATCH": ms}}, or {} before it ran."""
    path = where / "timing.json"
    return json.loads(path.read_text())["p50_ms"] if path.exists() else {}
