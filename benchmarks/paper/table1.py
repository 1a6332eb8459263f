"""The network-slimming paper's Table 1 (CIFAR-10 rows) as one command.

    COMPRESS_DATA=../shared/datasets/cifar10-jpeg.tar.gz \
        python benchmarks/paper/table1.py --scale tiny|cpu|full --out runs/paper-SCALE

Each row goes through a baseline (no sparsity), sparse training, pruning at the paper's percentage and
fine-tuning, all through the library's stages, so every stage resumes when the command is re-run (kill it
between or during stages at will; each command of a GPU session should stay under 10 minutes).
It writes OUT/table1.md and OUT/table1.json: our error, parameter and FLOP reductions beside the paper's.

Scales:
  tiny  small widths and depths, 300 training images, 1 epoch per stage: a smoke test for CI (minutes).
  cpu   VGG-19 ×0.25 / PreResNet-56 / DenseNet-40 ×0.5 (growth 6), 10k images, 10 + 5 epochs (hours on 2 cores).
  full  the paper's networks and recipe: 160 + 160 epochs on all 50k images (a GPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Liu et al., ICCV 2017, Table 1, CIFAR-10: test error (%), parameters and FLOPs of the baseline and the
# pruned model, and the reductions the paper reports.
PAPER = {
    "vgg19-70": {"baseline_error": 6.34, "pruned_error": 6.20, "params_reduction": 0.885, "flops_reduction": 0.510},
    "preresnet164-40": {"baseline_error": 5.42, "pruned_error": 5.08, "params_reduction": 0.149,
                        "flops_reduction": 0.237},
    "preresnet164-60": {"baseline_error": 5.42, "pruned_error": 5.27, "params_reduction": 0.352,
                        "flops_reduction": 0.449},
    "densenet40-40": {"baseline_error": 6.11, "pruned_error": 5.19, "params_reduction": 0.357,
                      "flops_reduction": 0.284},
    "densenet40-70": {"baseline_error": 6.11, "pruned_error": 5.65, "params_reduction": 0.652,
                      "flops_reduction": 0.550},
}

# row -> (arch, percent, λ); the paper uses λ = 1e-4 for VGG and 1e-5 for the others.
ROWS = {"vgg19-70": ("vgg19", 0.7, 1e-4), "preresnet164-40": ("preresnet164", 0.4, 1e-5),
        "preresnet164-60": ("preresnet164", 0.6, 1e-5), "densenet40-40": ("densenet40", 0.4, 1e-5),
        "densenet40-70": ("densenet40", 0.7, 1e-5)}

SCALES = {
    "tiny": {"arch": {"vgg19": ("vgg11", {"width": 0.125}), "preresnet164": ("preresnet20", {"width": 0.5}),
                      "densenet40": ("densenet10", {"width": 0.5, "growth_rate": 4})},
             "train_limit": 300, "test_limit": 200, "epochs": 1, "finetune_epochs": 1, "recipe": "fast"},
    "cpu": {"arch": {"vgg19": ("vgg19", {"width": 0.25}), "preresnet164": ("preresnet56", {}),
                     "densenet40": ("densenet40", {"width": 0.5, "growth_rate": 6})},
            "train_limit": 10000, "test_limit": 2000, "epochs": 10, "finetune_epochs": 5, "recipe": "fast"},
    "full": {"arch": {"vgg19": ("vgg19", {}), "preresnet164": ("preresnet164", {}),
                      "densenet40": ("densenet40", {})},
             "train_limit": None, "test_limit": None, "epochs": 160, "finetune_epochs": 160, "recipe": "paper"},
}


def run(scale: str, out: Path, rows: list[str], device: str | None, progress: bool) -> dict:
    from compress.data.options import DataOptions
    from compress.request import PruneRequest
    from compress.stages._run import RunOptions
    from compress.stages.slim import SlimOptions, slim
    from compress.stages.train import train
    from compress.training import Recipe

    cfg = SCALES[scale]
    data = DataOptions("cifar10", cfg["train_limit"], cfg["test_limit"], 0)
    results = {}
    baselines: dict[str, dict] = {}
    for row in rows:
        paper_arch, percent, sparsity = ROWS[row]
        arch, kwargs = cfg["arch"][paper_arch]
        recipe = Recipe.named(cfg["recipe"], epochs=cfg["epochs"])
        ft_recipe = Recipe.named(cfg["recipe"], epochs=cfg["finetune_epochs"])
        if paper_arch not in baselines:
            print(f"== {paper_arch}: baseline {arch} {kwargs}", file=sys.stderr, flush=True)
            baselines[paper_arch] = train(arch, data, out / paper_arch / "baseline", recipe, arch_kwargs=kwargs,
                                          run=RunOptions(device=device, progress=progress))
        print(f"== {row}: sparse training, prune {percent:.0%}, fine-tune", file=sys.stderr, flush=True)
        options = SlimOptions(train_recipe=recipe, finetune_recipe=ft_recipe, sparsity=sparsity,
                              prune=PruneRequest(percent=percent, min_keep=0.0))
        summary = slim(arch, data, out / row, options, arch_kwargs=kwargs, sparse_dir=out / paper_arch / "sparse",
                       run=RunOptions(device=device, progress=progress))
        base = baselines[paper_arch]
        st = summary["stages"]
        results[row] = {
            "arch": arch, "arch_kwargs": kwargs, "percent": percent, "sparsity": sparsity,
            "baseline_error": 1 - base["accuracy"], "sparse_error": 1 - st["sparse"]["accuracy"],
            "pruned_error_no_finetune": 1 - st["pruned"]["accuracy"],
            "pruned_error_no_bn_reestimation": 1 - (st["pruned"].get("accuracy_uncalibrated") or 0),
            "pruned_error": 1 - st["finetuned"]["accuracy"],
            "params": st["finetuned"]["params"], "flops": st["finetuned"]["flops"],
            "params_reduction": st["finetuned"]["params_reduction"],
            "flops_reduction": st["finetuned"]["macs_reduction"],
        }
    return results


def markdown(scale: str, results: dict, command: str) -> str:
    import torch

    lines = [f"# Network slimming, Table 1 (CIFAR-10) at scale `{scale}`", "",
             f"Command: `{command}`  ",
             f"Machine: {platform.node() or 'unknown'}, {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}, {'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}  ",
             f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC", "",
             "Errors are on the shared JPEG copy of CIFAR-10 (expect a little above the paper's lossless originals)"
             + ("; at this scale the networks, data and epochs are far smaller than the paper's, so only the "
                "mechanics are comparable, not the numbers" if scale != "full" else "") + ".", "",
             "| row | network | baseline error | sparse error | pruned, no fine-tune | fine-tuned error | "
             "params pruned | FLOPs pruned | paper: error base → pruned | paper: params / FLOPs pruned |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row, r in results.items():
        p = PAPER[row]
        kw = ", ".join(f"{k}={v}" for k, v in r["arch_kwargs"].items())
        lines.append(
            f"| {row} | {r['arch']}{' (' + kw + ')' if kw else ''} | {r['baseline_error']:.2%} | "
            f"{r['sparse_error']:.2%} | {r['pruned_error_no_finetune']:.2%} | {r['pruned_error']:.2%} | "
            f"{r['params_reduction']:.1%} | {r['flops_reduction']:.1%} | {p['baseline_error']:.2f}% → "
            f"{p['pruned_error']:.2f}% | {p['params_reduction']:.1%} / {p['flops_reduction']:.1%} |")
    lines += ["", "Pruning uses one global γ threshold with no per-layer floor (`min_keep=0`), as the paper; "
                  "FLOPs = 2 × MACs of convolutions and linear layers.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ", ".join(ROWS))
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows: {', '.join(unknown)}")
    out = args.out or Path("runs") / f"paper-{args.scale}"
    results = run(args.scale, out, rows, args.device, not args.no_progress)
    command = " ".join(["python", "benchmarks/paper/table1.py", *(argv if argv is not None else sys.argv[1:])])
    (out / "table1.json").write_text(json.dumps({"scale": args.scale, "rows": results, "paper": PAPER,
                                                 "command": command}, indent=2))
    md = markdown(args.scale, results, command)
    (out / "table1.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
