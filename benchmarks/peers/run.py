"""This toolkit against Torch-Pruning at equal MACs, side by side, as one resumable command (issue 20).

    COMPRESS_DATA=/path/to/cifar10-jpeg.tar.gz OMP_NUM_THREADS=1 \
        python benchmarks/peers/run.py --scale quick --out runs/peers-quick              # train + table
    python benchmarks/peers/run.py --scale quick --out runs/peers-quick --phase time     # rounds + paired; quiet machine
    python benchmarks/peers/run.py --scale quick --out runs/peers-quick --phase table

Per network and seed: `compress train` makes the shared plain model; `compress slim --from` it is the
toolkit's default (quick preset, `--round-to auto`); each Torch-Pruning method then trains its second
stage from the same plain model with the same recipe, prunes once to the toolkit's MACs (searched ratio,
the same floor and rounding) and fine-tunes for the same epochs. Every finished (seed, method) is a JSON
file that a rerun skips; an interrupted one resumes from its last finished stage or epoch. Several
processes may share one OUT: each takes the (seed, method) runs nobody holds.

Scales:
  tiny   mechanics only (the test suite): VGG-11 ×0.25, 300/200 images, 1 + 1 + 1 epochs, seed 0.
  quick  the quick preset's setting: VGG-19 ×0.25, 10k training images, the full 10k test set,
         5 plain + 5 sparse + 5 fine-tuning epochs, seeds 0, 1, 2.
  cpu    VGG-19 ×0.25 and PreResNet-56 on all 50k images, 10 + 10 + 10 epochs, seed 0 (hours on a CPU).
  full   VGG-19 and PreResNet-56 on all 50k images, 30 + 30 + 30 epochs, seeds 0, 1, 2 (a GPU).

--peers tp-bnscale runs only the named Torch-Pruning methods (a second seed for the pair that decides):
the table then compares the toolkit with each peer on the seeds both ran.

--finetune-lr LR fine-tunes every method alike at that peak LR (default: the one `compress slim` uses); an OUT
keeps the LR it started with.

--precision bf16 trains every method in bf16 autocast (on a CPU with AVX-512 BF16 or AMX, PreResNet-56's
full-width steps ran 1.8x faster; pruned networks gain less or lose); an OUT keeps the precision it started with.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RunLock, atomic_json, machine  # noqa: E402
from layer_profile import _at_least  # noqa: E402

VGG19Q = ("vgg19", {"width": 0.25})
SCALES = {
    # The tiny scales check mechanics: a fixed round_to, since "auto" is 16 with AVX-512, where two tied γ of
    # VGG-11 ×0.25's dead channels (one epoch) cost a whole 16-channel block and the prune was refused.
    "tiny": {"nets": {"vgg11x0.25": ("vgg11", {"width": 0.25})}, "train_limit": 300, "test_limit": 200,
             "plain_epochs": 1, "sparse_epochs": 1, "finetune_epochs": 1, "seeds": [0], "round_to": 8},
    "quick": {"nets": {"vgg19x0.25": VGG19Q}, "train_limit": 10000, "test_limit": 10000,
              "plain_epochs": 5, "sparse_epochs": 5, "finetune_epochs": 5, "seeds": [0, 1, 2]},
    # The quick setting on a network with coupled (residual) channels: one seed fits a session.
    "quick-resnet": {"nets": {"preresnet56": ("preresnet56", {})}, "train_limit": 10000, "test_limit": 10000,
                     "plain_epochs": 5, "sparse_epochs": 5, "finetune_epochs": 5, "seeds": [0]},
    "tiny-resnet": {"nets": {"preresnet56": ("preresnet56", {})}, "train_limit": 300, "test_limit": 200,
                    "plain_epochs": 1, "sparse_epochs": 1, "finetune_epochs": 1, "seeds": [0], "round_to": 8},
    # About 1.5 h for the VGG half on two cores (~90 s an epoch on one thread); PreResNet-56 trains ~6x slower.
    "cpu": {"nets": {"vgg19x0.25": VGG19Q, "preresnet56": ("preresnet56", {})}, "train_limit": 50000,
            "test_limit": 10000, "plain_epochs": 10, "sparse_epochs": 10, "finetune_epochs": 10, "seeds": [0]},
    "full": {"nets": {"vgg19": ("vgg19", {}), "preresnet56": ("preresnet56", {})}, "train_limit": 50000,
             "test_limit": 10000, "plain_epochs": 30, "sparse_epochs": 30, "finetune_epochs": 30,
             "seeds": [0, 1, 2]},
}
# The quick preset's recipe, the toolkit's default floor, and ONNX Runtime's CPU block (`--round-to auto`).
COMMON = {"recipe": "fast", "min_keep": 0.2, "round_to": "auto"}
PEERS = ["tp-bnscale", "tp-groupnorm", "tp-l1"]
SECOND = ".second"  # a peer's second stage as its own item: it needs the plain model, not the toolkit's MACs
# The toolkit's pruned stage as an item: its MACs are fixed there, so a peer's prune need not wait for the
# toolkit's fine-tuning.
PRUNED = ".pruned"


def config(args) -> dict:
    cfg = {**COMMON, **SCALES[args.scale], "data": args.data, "precision": args.precision,
           "finetune_lr": args.finetune_lr}
    if args.seeds:
        cfg["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.nets:
        cfg["nets"] = {k: v for k, v in cfg["nets"].items() if k in args.nets.split(",")}
    return cfg


def peers_arg(text: str) -> list[str]:
    """`--peers`: a comma-separated subset of the Torch-Pruning methods, in the benchmark's order."""
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown peers: {', '.join(unknown) or '(none named)'}; choose from "
                                         f"{', '.join(PEERS)}")
    return [p for p in PEERS if p in names]


def methods(args) -> list[str]:
    import variants

    chosen = ["toolkit", *args.peers] + [v for v in (args.variants or "").split(",") if v]
    unknown = [m for m in chosen if m not in ("toolkit", *PEERS, *variants.VARIANTS)]
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(unknown)}; choose from {', '.join(variants.VARIANTS)}")
    return chosen


def _needs(method: str) -> list[str]:
    import variants

    if method == "pretrained":
        return []
    if method == "toolkit" or method.endswith(SECOND):
        return ["pretrained"]
    if method in PEERS:
        return ["pretrained", "toolkit" + PRUNED]
    return ["pretrained", *variants.VARIANTS[method].needs]


def run_one(method: str, net: str, seed: int, cfg: dict, out: Path, args) -> None:
    """Run one (net, seed, method) to its result file."""
    import results
    import toolkit

    arch, kwargs = cfg["nets"][net]
    where = out / net / f"seed{seed}"
    if method.endswith(SECOND):
        import tp_stages
        from results import data_for

        peer = method[: -len(SECOND)]
        tp_stages.second_stage(peer, where / "pretrained", where / peer, data_for(cfg, seed), cfg, seed=seed,
                               device=args.device, progress=args.progress)
        return
    if method == "pretrained":
        wall = toolkit.pretrain(cfg, arch, kwargs, seed, where / "pretrained", args.device)
        atomic_json(where / "pretrained.json", {"wall_s": round(wall, 1)})
        return
    record = results.collect(method, where, cfg, seed, args)
    record.update(net=net, arch=arch, arch_kwargs=kwargs, scale=args.scale, precision=cfg["precision"],
                  finetune_lr=toolkit.finetune_lr_of(cfg))
    atomic_json(where / f"{method}.json", record)


def _done(where: Path, item: str) -> bool:
    if item.endswith(SECOND):
        return (where / item[: -len(SECOND)] / "sparse" / "model.json").exists()
    if item.endswith(PRUNED):
        return (where / item[: -len(PRUNED)] / "pruned" / "model.json").exists()
    return (where / f"{item}.json").exists()


def _unmatched(where: Path, method: str) -> bool:
    import tp_methods

    path = where / f"{method}.json"
    return method.startswith("tp-") and path.exists() and \
        abs(json.loads(path.read_text())["macs_error"]) > tp_methods.MATCH_TOLERANCE


def _drop_unmatched(where: Path, method: str) -> None:
    """A peer whose MACs missed the target by more than the tolerance (made before the search could top up
    past a rounding jump) is pruned and fine-tuned again; its second stage is kept."""
    import shutil

    if not _unmatched(where, method):
        return
    path = where / f"{method}.json"
    print(f"== {where}: {method} missed the MACs target; pruning and fine-tuning it again", file=sys.stderr)
    path.unlink()
    for stage in ("pruned", "finetuned"):
        shutil.rmtree(where / method / stage, ignore_errors=True)


def main_items(peers: list[str], chosen: list[str]) -> list[str]:
    """The comparison's items in run order: the plain model, the toolkit, the second stages of the chosen
    peers and of any peer a chosen variant builds on (so `--peers` cannot leave a variant waiting for a
    stage nobody runs), then the chosen peers."""
    seconds = {d for m in chosen for d in _needs(m) if d.endswith(SECOND)}
    return ["pretrained", "toolkit", *(p + SECOND for p in PEERS if p in peers or p + SECOND in seconds), *peers]


def train_phase(cfg: dict, out: Path, args) -> None:
    """Run every pending (net, seed, method) whose inputs are finished; wait for those held elsewhere."""
    chosen = methods(args)
    # The comparison first, seed by seed; then each ablation variant over every seed, one variant at a time.
    # The toolkit's run comes before the peers' second stages: its prune fixes the MACs every peer's prune waits for.
    main = main_items(args.peers, chosen)
    pending = [(net, seed, m) for net in cfg["nets"] for seed in cfg["seeds"] for m in main]
    pending += [(net, seed, m) for net in cfg["nets"] for m in chosen if m not in main for seed in cfg["seeds"]]
    while pending:
        progressed = False
        for net, seed, m in list(pending):
            where = out / net / f"seed{seed}"
            if _done(where, m) and not _unmatched(where, m):
                pending.remove((net, seed, m))
                continue
            if not all(_done(where, d) for d in _needs(m)):
                continue
            with RunLock(where / f"{m}.lock") as held:
                if held:
                    _drop_unmatched(where, m)
                if not held or _done(where, m):
                    continue
                t0 = time.time()
                print(f"== {net} seed {seed}: {m}", file=sys.stderr, flush=True)
                run_one(m, net, seed, cfg, out, args)
                print(f"== {net} seed {seed}: {m} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
            pending.remove((net, seed, m))
            progressed = True
            break  # rescan from the top: what this run finished may have unblocked an earlier item
        if pending and not progressed:
            time.sleep(args.poll)


def _precision_of(out: Path) -> str:
    from compress.precision import label

    path = out / "precision.json"
    return label(json.loads(path.read_text())["precision"] if path.exists() else "auto")


def write_table(cfg: dict, out: Path, args) -> str:
    import paired_timing
    import report
    import timing

    parts = [f"# This toolkit against Torch-Pruning at equal MACs: scale `{args.scale}`", "",
             f"Command: `python benchmarks/peers/run.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine()}  ", f"Training precision (every method): {_precision_of(out)}  ",
             f"Fine-tuning peak LR (every method): {_finetune_lr_label(out, cfg)}  ",
             f"Written: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC", ""]
    everything = {}
    for net in cfg["nets"]:
        runs, shaky = [], {}
        for where in sorted((out / net).glob("seed*")):
            latency = timing.latency_of(where)
            shaky.update({f"{where.name} {cell}": r for cell, r in timing.unsteady_of(where).items()})
            for p in sorted(where.glob("*.json")):
                if p.stem not in ("pretrained", "timing"):
                    runs.append({**json.loads(p.read_text()), "latency_ms": latency.get(p.stem, {})})
        if not runs:
            continue
        summary = report.summarize(runs)
        everything[net] = {"summary": summary, "runs": runs}
        parts += [f"## {net}", "", *report.table(summary), ""]
        if shaky:
            parts += [f"Latency not settled: the timing rounds of these cells differ by more than "
                      f"{timing.STEADY - 1:.0%} (max/min): " + ", ".join(f"{c} {r}x" for c, r in shaky.items()) +
                      ". Time again on a quiet machine before reading them.", ""]
        paired = {where.name: found for where in sorted((out / net).glob("seed*"))
                  if (found := paired_timing.read(where))}
        labels = {m: s["label"] for m, s in summary.items()}
        parts += ["Acceptance (issue 20):", "", *report.acceptance(summary), ""]
        if paired:
            parts += [*report.paired_speed(paired, labels), ""]
        parts += ["Per seed:", "", *report.per_seed(runs), ""]
    atomic_json(out / "results.json", everything)
    text = "\n".join(parts)
    (out / "table.md").write_text(text)
    return text


def _kept_setting(out: Path, name: str, value, *, legacy, said) -> tuple | None:
    """Every method of one OUT shares the setting `name`, recorded in OUT/NAME.json by the first run: a
    mismatch is refused (`said(v)` words it); a folder of runs made before the option holds `legacy`.
    Returns what to record when the folder has not recorded it yet."""
    path = out / f"{name}.json"
    if path.exists():
        before = json.loads(path.read_text())[name]
    else:
        before = legacy if any(out.glob("*/seed*")) else value
    if before != value:
        raise SystemExit(f"{out} holds runs {said(before)}; use it again, or another --out")
    return None if path.exists() else (path, {name: value})


def _record(*settings) -> None:
    for found in settings:
        if found is not None:
            atomic_json(*found)


def _precision_setting(out: Path, precision: str) -> tuple | None:
    """Every method of one OUT trains in the same arithmetic; folders from before the option trained in `auto`."""
    return _kept_setting(out, "precision", precision, legacy="auto", said=lambda b: f"trained with --precision {b}")


def _finetune_lr_setting(out: Path, lr: float | None) -> tuple | None:
    """Every method of one OUT fine-tunes at the same peak LR; folders from before the option used the
    recipe's (None)."""
    return _kept_setting(out, "finetune_lr", lr, legacy=None,
                         said=lambda b: f"fine-tuned with --finetune-lr {b:g}" if b
                         else "fine-tuned with the recipe's fine-tuning LR (no --finetune-lr)")


def _finetune_lr_label(out: Path, cfg: dict) -> str:
    import toolkit

    path = out / "finetune_lr.json"
    chosen = json.loads(path.read_text())["finetune_lr"] if path.exists() else None
    if chosen:
        return f"{chosen:g} (`--finetune-lr`)"
    return f"{toolkit.finetune_lr_of({**cfg, 'finetune_lr': None}):g} (the recipe's)"


def _positive_lr(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 10):
        raise argparse.ArgumentTypeError(f"a learning rate in (0, 10], got {text!r}")
    return value


def _blocks_or_none(text: str) -> int:
    import paired_timing

    return paired_timing.blocks_arg(text, zero_skips=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--phase", choices=["train", "time", "table"], default="train",
                    help="train (then write the table), time (latency; run on a quiet machine), table")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the scale's)")
    ap.add_argument("--nets", default=None, help="comma-separated networks of the scale (default: all)")
    ap.add_argument("--peers", type=peers_arg, default=list(PEERS),
                    help=f"comma-separated Torch-Pruning methods to run (default: all, {','.join(PEERS)})")
    ap.add_argument("--variants", default=None, help="comma-separated ablation variants of the toolkit to add")
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="training arithmetic of every method alike (compress --precision); one per OUT")
    ap.add_argument("--finetune-lr", type=_positive_lr, default=None,
                    help="fine-tuning peak LR of every method alike (default: the one compress slim uses); one per OUT")
    ap.add_argument("--iters", type=_at_least(1, 100_000), default=200, help="timing: iterations per batch size")
    ap.add_argument("--rounds", type=_at_least(1, 20), default=2,
                    help="timing: passes over all methods, alternating order; the fastest round's p50 is kept")
    ap.add_argument("--paired-blocks", type=_blocks_or_none, default=None,
                    help="timing: blocks of the interleaved (paired) timing after the rounds, 0 to skip (default 60)")
    ap.add_argument("--poll", type=float, default=60.0, help="seconds between checks for runs held elsewhere")
    ap.add_argument("--progress", action="store_true", help="show per-batch progress bars")
    args = ap.parse_args(argv)
    cfg = config(args)
    out = args.out or Path("runs") / f"peers-{args.scale}"
    out.mkdir(parents=True, exist_ok=True)
    if args.phase == "train":
        # Both checked before either is recorded: a refused run writes nothing.
        _record(_precision_setting(out, args.precision), _finetune_lr_setting(out, args.finetune_lr))
        train_phase(cfg, out, args)
    elif args.phase == "time":
        import timing

        timing.time_all(cfg, out, args)
    print(write_table(cfg, out, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
