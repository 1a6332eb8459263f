"""Step 3: the network-slimming paper's VGG-19 row (CIFAR-10, 70% of channels), through the library's stages.

Baseline (no sparsity), sparse training (L1 subgradient on BN γ, λ = 1e-4), pruning 70% of the channels
by one global γ threshold (no per-layer floor, as the paper), fine-tuning; the paper's recipe (SGD 0.1,
Nesterov, batch 64, weight decay 1e-4, ÷10 at 50% and 75%). The paper trains 160 epochs per stage; when
the measured speed of fit() does not fit that in the time left, every stage gets the same, longest number
of epochs that fits, and the table says so. Stages resume from their checkpoints when re-run on the same
machine (the model directories and train_state/ stay under the work folder).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import compress

# Liu et al., ICCV 2017, Table 1: VGG-19 on CIFAR-10, 70% pruned.
PAPER = {"baseline_error": 6.34, "pruned_error": 6.20, "params_reduction": 0.885, "flops_reduction": 0.510,
         "epochs": "160 + 160"}
STAGES = ("baseline", "sparse", "pruned", "finetuned")


@dataclass(frozen=True)
class RowScale:
    arch: str
    arch_kwargs: dict
    train_limit: int | None
    test_limit: int | None
    max_epochs: int
    fixed_s: float  # data loading, pruning, BN re-estimation, model directories and plots, all stages together


FULL = RowScale("vgg19", {}, None, None, 160, 60.0)
DRY = RowScale("vgg19", {"width": 0.0625}, 256, 128, 1, 5.0)
BATCH = 64  # the paper's


def plan_epochs(scale: RowScale, seconds: float, n_train: int, n_test: int, speed: dict) -> dict:
    """The epochs per stage that fit in `seconds`, eager or compiled (whichever gives more), from fit()'s img/s."""
    options = []
    if speed.get("eager_img_s"):
        options.append(("eager", speed["eager_img_s"], 0.0))
    if speed.get("compiled_img_s"):
        # VGG-19's graph is compiled already (the throughput step, same shapes); the pruned network is not.
        options.append(("compiled", speed["compiled_img_s"], speed.get("compile_s") or 60.0))
    best = {"epochs": 0, "mode": None, "reason": "fit()'s throughput at batch 64 was not measured"}
    for mode, img_s, compile_s in options:
        per_epoch = n_train / img_s * 1.1 + n_test / (3 * img_s) + 0.3
        epochs = min(scale.max_epochs, math.floor((seconds - scale.fixed_s - compile_s) / (3 * per_epoch)))
        if epochs > best["epochs"]:
            best = {"epochs": epochs, "mode": mode, "epoch_s_estimate": round(per_epoch, 2), "img_s": img_s}
    if options and best["epochs"] < 1:
        best["reason"] = f"not one epoch per stage fits in {seconds:.0f} s at the measured speed"
    return best


def run(scale: RowScale, data_spec: str, work: Path, device: str, seconds: float, speed: dict,
        sizes: tuple[int, int]) -> dict:
    """Plan the schedule for `seconds` (`sizes`: training and test images), then run baseline, sparse
    training, pruning and fine-tuning."""
    plan = plan_epochs(scale, seconds, *sizes, speed)
    if plan["epochs"] < 1:
        return {"status": "skipped", "reason": plan["reason"], "plan": plan}
    epochs, compiled = plan["epochs"], plan["mode"] == "compiled"
    print(f"row: {epochs} + {epochs} epochs per stage (paper: 160 + 160), {plan['mode']}, planned for "
          f"{seconds:.0f} s", flush=True)
    data = compress.DataOptions(data_spec, scale.train_limit, scale.test_limit, 0)
    recipe = compress.Recipe.named("paper", epochs=epochs)
    t0 = time.monotonic()
    run_options = compress.RunOptions(device=device, compile=compiled)
    compress.train(scale.arch, data, work / "baseline", recipe, arch_kwargs=scale.arch_kwargs, run=run_options)
    prune = compress.PruneRequest(percent=0.7, min_keep=0.0, round_to=1)
    compress.slim(scale.arch, data, work / "row",
                  compress.SlimOptions(train_recipe=recipe, finetune_recipe=recipe, prune=prune, sparsity=1e-4),
                  arch_kwargs=scale.arch_kwargs, run=run_options)
    result = {"status": "ok", "plan": plan, "epochs": epochs, "seconds": round(time.monotonic() - t0, 1),
              "schedule": schedule_text(epochs, scale), **table(work)}
    return result


def schedule_text(epochs: int, scale: RowScale) -> str:
    text = f"{epochs} + {epochs} epochs (baseline {epochs}), batch {BATCH}, SGD 0.1 Nesterov, ÷10 at 50%/75%"
    if epochs < 160:
        text += "; the paper's 160 + 160 did not fit in the window: this is the longest schedule that fit"
    if scale.train_limit:
        text += f"; {scale.train_limit} training and {scale.test_limit} test images (toy scale)"
    return text


def _meta(path: Path) -> dict:
    return json.loads((path / "model.json").read_text())


def table(work: Path) -> dict:
    """Error, parameters, FLOPs and wall time of every stage, read from the model directories."""
    dirs = {"baseline": work / "baseline", "sparse": work / "row" / "sparse", "pruned": work / "row" / "pruned",
            "finetuned": work / "row" / "finetuned"}
    metas = {k: _meta(d) for k, d in dirs.items()}
    base = metas["baseline"]
    rows = {}
    for name, m in metas.items():
        wall = (m.get("training") or {}).get("wall_time_s") or (m.get("pruning") or {}).get("wall_time_s")
        rows[name] = {"error": 1 - m["accuracy"], "params": m["params"], "flops": m["flops"], "wall_time_s": wall}
    ft = rows["finetuned"]
    checks = {
        "error_within_0.1pp_of_baseline": ft["error"] <= rows["baseline"]["error"] + 0.001,
        "params_reduction": 1 - ft["params"] / base["params"],
        "flops_reduction": 1 - ft["flops"] / base["flops"],
    }
    checks["params_at_least_85pct"] = checks["params_reduction"] >= 0.85
    checks["flops_at_least_50pct"] = checks["flops_reduction"] >= 0.50
    return {"stages": rows, "checks": checks, "paper": PAPER}


def markdown(result: dict) -> list[str]:
    lines = ["## The paper's VGG-19 row (CIFAR-10, 70% of channels pruned)", ""]
    if result.get("status") != "ok":
        return lines + [f"Not run: {result.get('reason')}.", ""]
    st, ch = result["stages"], result["checks"]
    lines += [f"Schedule: {result['schedule']}.", "",
              "| stage | test error | params | FLOPs | wall time |", "|---|---:|---:|---:|---:|"]
    for name in STAGES:
        r = st[name]
        lines.append(f"| {name} | {r['error']:.2%} | {r['params']:,} | {r['flops']:,} | "
                     f"{r['wall_time_s'] if r['wall_time_s'] is not None else '—'} s |")
    p = PAPER
    lines += ["", "| | ours | paper |", "|---|---:|---:|",
              f"| error, baseline → pruned and fine-tuned | {st['baseline']['error']:.2%} → "
              f"{st['finetuned']['error']:.2%} | {p['baseline_error']:.2f}% → {p['pruned_error']:.2f}% |",
              f"| parameters pruned | {ch['params_reduction']:.1%} | {p['params_reduction']:.1%} |",
              f"| FLOPs pruned | {ch['flops_reduction']:.1%} | {p['flops_reduction']:.1%} |",
              f"| epochs | {result['epochs']} + {result['epochs']} | {p['epochs']} |", "",
              f"Acceptance: error ≤ baseline + 0.1 pp: {'yes' if ch['error_within_0.1pp_of_baseline'] else 'no'}; "
              f"params −≥85%: {'yes' if ch['params_at_least_85pct'] else 'no'}; FLOPs −≥50%: "
              f"{'yes' if ch['flops_at_least_50pct'] else 'no'}.", ""]
    return lines
