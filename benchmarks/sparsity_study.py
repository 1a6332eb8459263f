"""What polarizes BN γ at the quick preset's scale without costing accuracy (issue 11, part 1).

One variant per invocation: (optional plain pre-training) → sparse phase → prune 50% (the project's 20%
floor, and floor off), evaluated with NO BN re-estimation → fine-tune. Writes one JSON per variant into
--results. Run them one at a time, e.g.

    COMPRESS_DATA=/work/shared/datasets/cifar10-jpeg.tar.gz PYTHONPATH=$PWD \\
        nice -n 10 python benchmarks/sparsity_study.py --variant prox-b1 --results benchmarks/results/sparsity_study

`--list` prints the variants. `--ft-lrs 0.02,0.05,0.1` fine-tunes one variant's pruned model at each
peak learning rate instead (the fine-tuning LR sweep).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compress.data.options import DataOptions
from compress.slimming import prune
from compress.sparsity import Budget, SparsityConfig, polarization
from compress.training import Recipe, evaluate, fit
from compress.models import create_model

# The quick preset: VGG-19 ×0.25, 10k stratified train images, 2k test, fast recipe, 10 + 5 epochs.
ARCH, WIDTH, TRAIN, TEST = "vgg19", 0.25, 10000, 2000

# start: epochs of plain training first (shared checkpoint), sparse: sparse epochs, ft: fine-tune epochs.
VARIANTS = {
    # today's default, for reference: subgradient λ = 1e-4 from scratch, wd on γ
    "sub-1e-4": dict(start=0, sparse=10, ft=5, sparsity=1e-4),
    # from scratch, proximal, pull budget 1.0, no wd on γ, λ ramped over the first half
    "prox-b1-ramp": dict(start=0, sparse=10, ft=5,
                         sparsity=SparsityConfig(Budget(1.0), "proximal", ramp=0.5, gamma_decay=False)),
    # from scratch, subgradient at the same budget/(1-μ) as prox-b1, no wd on γ, ramp
    "sub-b0.1-ramp": dict(start=0, sparse=10, ft=5,
                          sparsity=SparsityConfig(Budget(0.1), "subgradient", ramp=0.5, gamma_decay=False)),
    # 5 plain epochs, then 5 sparse-fine-tuning epochs (proximal), then 5 fine-tuning: 15 in all
    "ft5-prox-b1": dict(start=5, sparse=5, ft=5,
                        sparsity=SparsityConfig(Budget(1.0), "proximal", gamma_decay=False)),
    "ft5-sub-b0.1": dict(start=5, sparse=5, ft=5,
                         sparsity=SparsityConfig(Budget(0.1), "subgradient", gamma_decay=False)),
    "ft5-prox-b0.5": dict(start=5, sparse=5, ft=5,
                          sparsity=SparsityConfig(Budget(0.5), "proximal", gamma_decay=False)),
    "ft5-prox-b2": dict(start=5, sparse=5, ft=5,
                        sparsity=SparsityConfig(Budget(2.0), "proximal", gamma_decay=False)),
    "prox-b1": dict(start=0, sparse=10, ft=5,
                    sparsity=SparsityConfig(Budget(1.0), "proximal", gamma_decay=False)),
    "prox-b2-ramp": dict(start=0, sparse=10, ft=5,
                         sparsity=SparsityConfig(Budget(2.0), "proximal", ramp=0.5, gamma_decay=False)),
    # one schedule, no pipeline change: λ off for the first half, then the whole budget in the second
    "delay-prox-b1": dict(start=0, sparse=10, ft=5,
                          sparsity=SparsityConfig(Budget(1.0), "proximal", ramp=(0.5, 0.5), gamma_decay=False)),
    "prox-b1-ramp-wd": dict(start=0, sparse=10, ft=5,
                            sparsity=SparsityConfig(Budget(1.0), "proximal", ramp=0.5, gamma_decay=True)),
}


def describe(sparsity) -> dict:
    return sparsity.describe() if isinstance(sparsity, SparsityConfig) else {"mode": "subgradient",
                                                                             "strength": sparsity,
                                                                             "gamma_decay": True}


def load_weights(model, path: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))


def new_model():
    torch.manual_seed(0)
    return create_model(ARCH, num_classes=10, width=WIDTH)


def plain_start(epochs: int, train, test, mean, std, work: Path) -> tuple[dict, float]:
    """Weights after `epochs` plain epochs (fast recipe, no sparsity), trained once and cached."""
    path = work / f"plain{epochs}.safetensors"
    info = work / f"plain{epochs}.json"
    if path.exists() and info.exists():
        return json.loads(info.read_text()), 0.0
    model = new_model()
    t0 = time.perf_counter()
    res = fit(model, train, test, work / f"plain{epochs}", Recipe.named("fast", epochs=epochs), mean=mean, std=std,
              sparsity=0.0, device="cpu", progress=False, resume=False)
    elapsed = time.perf_counter() - t0
    save_weights(model, path)
    meta = {"epochs": epochs, "accuracy": res["last"]["test_accuracy"], "train_time_s": elapsed,
            "history": res["history"]}
    info.write_text(json.dumps(meta, indent=1))
    return meta, elapsed


def prune_eval(model, percent, test, mean, std, *, min_keep: float):
    pruned = copy.deepcopy(model).cpu()
    base_params = sum(p.numel() for p in pruned.parameters())
    pruned, plan = prune(pruned, percent, torch.zeros(1, 3, 32, 32), min_keep=min_keep)
    acc = evaluate(pruned, test, mean, std)["accuracy"]
    params = sum(p.numel() for p in pruned.parameters())
    return pruned, {"accuracy": acc, "params": params, "params_reduction": 1 - params / base_params,
                    "channels_after": plan["channels_after"], "channels_before": plan["channels_before"]}


def finetune(pruned, epochs, lr, train, test, mean, std, out: Path):
    recipe = Recipe.named("fast", epochs=epochs, lr=lr)
    t0 = time.perf_counter()
    res = fit(pruned, train, test, out, recipe, mean=mean, std=std, device="cpu", progress=False, resume=False)
    return {"epochs": epochs, "lr": lr, "accuracy": res["last"]["test_accuracy"],
            "best_accuracy": res["best"]["test_accuracy"], "train_time_s": time.perf_counter() - t0,
            "recipe": res["recipe"], "history": [{k: r[k] for k in ("epoch", "lr", "test_accuracy", "train_loss")}
                                                 for r in res["history"]]}


def machine() -> dict:
    flags = subprocess.run("lscpu | grep -o 'avx512_vnni\\|avx2\\|avx512f' | sort -u", shell=True,
                           capture_output=True, text=True).stdout.split()
    return {"cpu_flags": flags, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(results: Path) -> str:
    """The markdown table of every variant's JSON in `results`."""
    rows = ["| variant | update | strength | γ wd | ramp | epochs (plain+sparse+ft) | sparse acc. | γ < 1e-3 | "
            "γ < 1e-2 | pruned 50%, floor 0.2, no re-est. | floor off | params −(floor 0.2) | fine-tuned | "
            "training time |",
            "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for path in sorted(results.glob("*.json")):
        r = json.loads(path.read_text())
        if "sparse" not in r:
            continue
        sp = r["sparsity"]
        strength = f"P = {sp['budget']}" if "budget" in sp else f"λ = {sp['strength']}"
        ft = r.get("finetuned")
        rows.append(
            f"| {r['variant']} | {sp['mode']} | {strength} | {'yes' if sp.get('gamma_decay') else 'no'} | "
            f"{sp.get('ramp') or '—'} | {r['start_epochs']}+{r['sparse_epochs']}+{r['finetune_epochs']} | "
            f"{r['sparse']['accuracy']:.2%} | {r['sparse']['gamma_under_1e-3']:.1%} | "
            f"{r['sparse']['gamma_under_1e-2']:.1%} | {r['pruned_floor0.2']['accuracy']:.2%} | "
            f"{r['pruned_floor_off']['accuracy']:.2%} | {r['pruned_floor0.2']['params_reduction']:.1%} | "
            f"{'not run' if ft is None else format(ft['accuracy'], '.2%')} | {r['train_time_s']:.0f} s |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=sorted(VARIANTS))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "sparsity_study")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "sparsity-study")
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--percent", type=float, default=0.5)
    ap.add_argument("--ft-lr", type=float, default=0.1, help="fine-tuning peak LR (fast recipe's is 0.1)")
    ap.add_argument("--no-ft", action="store_true", help="stop after pruning (fine-tune later with --ft-lrs)")
    ap.add_argument("--ft-lrs", default=None, help="comma-separated peak LRs: sweep fine-tuning on the variant's "
                                                  "pruned model (needs the variant's sparse weights)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the results so far")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.results))
        return 0
    if args.list or not args.variant:
        for name, v in VARIANTS.items():
            print(f"{name:18s} start {v['start']} sparse {v['sparse']} ft {v['ft']} {describe(v['sparsity'])}")
        return 0
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    v = VARIANTS[args.variant]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    data = DataOptions(args.data, TRAIN, TEST, 0)
    train, test = data.split("train"), data.split("test")
    mean, std = train.channel_stats()
    sparse_path = work / f"{args.variant}-sparse.safetensors"

    if args.ft_lrs:
        model = new_model()
        load_weights(model, sparse_path)
        _, pr = prune_eval(model, args.percent, test, mean, std, min_keep=0.2)
        rows = []
        for lr in (float(s) for s in args.ft_lrs.split(",")):
            pruned, _ = prune_eval(model, args.percent, test, mean, std, min_keep=0.2)
            row = finetune(pruned, v["ft"], lr, train, test, mean, std, work / f"{args.variant}-ftlr{lr}")
            rows.append(row)
            print(f"ft lr {lr}: {row['accuracy']:.4f} (best {row['best_accuracy']:.4f}) "
                  f"{row['train_time_s']:.0f} s", flush=True)
        out = {"variant": args.variant, "pruned_uncalibrated": pr, "sweep": rows, "machine": machine(),
               "command": "python " + " ".join(sys.argv)}
        (args.results / f"ftlr-{args.variant}.json").write_text(json.dumps(out, indent=1))
        return 0

    result = {"variant": args.variant, "sparsity": describe(v["sparsity"]), "start_epochs": v["start"],
              "sparse_epochs": v["sparse"], "finetune_epochs": v["ft"],
              "total_epochs": v["start"] + v["sparse"] + v["ft"], "machine": machine(),
              "command": "python " + " ".join(sys.argv)}
    model = new_model()
    start_time = 0.0
    if v["start"]:
        meta, _ = plain_start(v["start"], train, test, mean, std, work)
        load_weights(model, work / f"plain{v['start']}.safetensors")
        start_time = meta["train_time_s"]
        result["start_accuracy"] = meta["accuracy"]
    t0 = time.perf_counter()
    recipe = Recipe.named("fast", epochs=v["sparse"])
    res = fit(model, train, test, work / f"{args.variant}-sparse", recipe, mean=mean, std=std,
              sparsity=v["sparsity"], device="cpu", progress=False, resume=False)
    sparse_time = time.perf_counter() - t0
    model.cpu()
    save_weights(model, sparse_path)
    result["sparse"] = {"accuracy": res["last"]["test_accuracy"], "train_time_s": sparse_time,
                        **polarization(model, args.percent),
                        "history": [{k: r.get(k) for k in ("epoch", "lr", "test_accuracy", "sparsity_lambda",
                                                           "gamma_under_1e-3", "gamma_under_1e-2", "gamma_gap",
                                                           "gamma_pruned_max")} for r in res["history"]]}
    print(f"{args.variant}: sparse {result['sparse']['accuracy']:.4f} "
          f"γ<1e-3 {result['sparse']['gamma_under_1e-3']:.3f} ({sparse_time:.0f} s)", flush=True)
    pruned, result["pruned_floor0.2"] = prune_eval(model, args.percent, test, mean, std, min_keep=0.2)
    _, result["pruned_floor_off"] = prune_eval(model, args.percent, test, mean, std, min_keep=0.0)
    print(f"  pruned (no BN re-estimation): floor 0.2 {result['pruned_floor0.2']['accuracy']:.4f}, "
          f"floor off {result['pruned_floor_off']['accuracy']:.4f}", flush=True)
    if args.no_ft:
        result["train_time_s"] = start_time + sparse_time
        (args.results / f"{args.variant}.json").write_text(json.dumps(result, indent=1))
        return 0
    result["finetuned"] = finetune(pruned, v["ft"], args.ft_lr, train, test, mean, std,
                                   work / f"{args.variant}-ft")
    result["train_time_s"] = start_time + sparse_time + result["finetuned"]["train_time_s"]
    print(f"  fine-tuned {result['finetuned']['accuracy']:.4f}; training time {result['train_time_s']:.0f} s",
          flush=True)
    (args.results / f"{args.variant}.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
