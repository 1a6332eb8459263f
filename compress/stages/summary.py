"""What a slimming run reports: summary.json (per stage: accuracy, params, MACs, reductions, wall time; the
budget asked and met), summary.md, and the plots beside them. Every sentence about a pruning budget as
plan.json records it is written here."""

from __future__ import annotations

import json
from pathlib import Path

from compress.stages._run import command_line, log, sparsity_json, sparsity_words


def build_summary(stages: dict, times: dict, data, percent: float | None, sparsity) -> dict:
    """summary.json: `stages` maps a stage name to its model.json; reductions are against the sparse model."""
    base = stages["sparse"]
    rows = {}
    for name, meta in stages.items():
        rows[name] = {
            "accuracy": meta["accuracy"], "params": meta["params"], "macs": meta["macs"], "flops": meta["flops"],
            "params_reduction": 1 - meta["params"] / base["params"],
            "macs_reduction": 1 - meta["macs"] / base["macs"],
            "wall_time_s": times.get(name),
        }
        if "pruning" in meta and name.startswith("pruned"):
            rows[name]["accuracy_uncalibrated"] = meta["pruning"].get("accuracy_uncalibrated")
        if not name.startswith("pruned") and (meta.get("training") or {}).get("precision"):
            rows[name]["precision"] = meta["training"]["precision"]
    pruned = [m for n, m in stages.items() if n.startswith("pruned")]
    first, last = pruned[0]["pruning"], pruned[-1]["pruning"]
    return {"format": "compress.summary/1", "arch": base["arch"], "arch_kwargs": base["arch_kwargs"],
            "data": data.describe(), "percent": percent, "sparsity": sparsity_json(sparsity),
            "channels_before": first["channels_before"], "channels_after": last["channels_after"],
            "pruned_accuracy_uncalibrated": first.get("accuracy_uncalibrated"),
            "budget": _budget_met(first.get("budget"), stages),
            "bn_recalibration_images": first.get("bn_recalibration_images", 0),
            "exact_removal": bool(first.get("exact_removal")),
            "stages": rows, "command": command_line()}


def _budget_met(budget: dict | None, stages: dict) -> dict | None:
    """The budget asked, and the fraction of the sparse model's cost the final model actually has."""
    if not budget:
        return None
    if budget["target"] == "latency_ms":
        return budget  # fine-tuning keeps the structure, so the latency measured at pruning stands
    key = {"macs": "macs", "params": "params"}[budget["target"]]
    final = [m for n, m in stages.items() if n.startswith("finetuned")][-1]
    return {**budget, "met": final[key] / stages["sparse"][key]}


# --- a recorded budget in words --------------------------------------------------------------------------

def budget_text(b: dict) -> str:
    """A plan's budget, asked and met, for the one-line report of a pruning command."""
    if b["target"] == "latency_ms":
        return (f"p50 latency budget {b['asked']:g} ms on {b['backend']} (unpruned {b['full']:.3f} ms), "
                f"met {b['met']:.3f} ms with {b['macs_met']:.1%} of the MACs")
    return f"{b['target']} budget {b['asked']:g} of the unpruned, met {b['met']:.3f}"


def _budget_phrase(b: dict) -> str:
    if b["target"] == "latency_ms":
        return f"to a p50 latency of {b['asked']:g} ms ({b['backend']}, batch {b['batch']})"
    return f"to a {b['target']} budget"


def _budget_sentence(b: dict) -> str:
    """The budget asked and met, in one sentence of summary.md."""
    importance = b.get("importance", "|γ|")
    if b["target"] != "latency_ms":
        return (f"Budget: {b['target']} at {b['asked']:.1%} of the sparse model's; met {b['met']:.2%} "
                f"(importance: {importance}).")
    machine = b.get("machine") or {}
    return (f"Budget: p50 latency {b['asked']:g} ms at batch {b['batch']} on {b['backend']} "
            f"({machine.get('cpu_model') or 'this machine'}, threads: {machine.get('threads', '?')}); the sparse model "
            f"ran at {b['full']:.3f} ms, the pruned one at {b['met']:.3f} ms with {b['macs_met']:.1%} of the MACs "
            f"({len(b['candidates'])} candidates tried, {b['iterations']} iterations each; importance: {importance}). "
            f"These latencies hold for that machine, backend and batch, with the ONNX export at opset {b['opset']}.")


def _sparsity_text(value) -> str:
    if isinstance(value, dict):
        return sparsity_words(value, noun=" L1")
    return f"subgradient L1, λ = {value}"


def summary_markdown(s: dict) -> str:
    lines = [f"# Slimming summary: {s['arch']}", "",
             f"Data `{s['data']['spec']}`; sparsity {_sparsity_text(s['sparsity'])}; pruned "
             + (_budget_phrase(s["budget"]) if s.get("budget") else f"{s['percent']:.0%} of BN channels")
             + (f" per pass, {s['passes']} passes" if s.get("passes", 1) > 1 else "")
             + f" ({s['channels_before']} → {s['channels_after']} prunable channels).", "",
             "| stage | accuracy | before BN re-estimation | params | Δ params | MACs | FLOPs (2×MACs) | Δ MACs "
             "| wall time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in s["stages"].items():
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
        raw = r.get("accuracy_uncalibrated")
        raw = "" if raw is None or raw == r["accuracy"] else f"{raw:.2%}"
        wall = "" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f} s"
        lines.append(f"| {name} | {acc} | {raw} | {r['params']:,} | {-r['params_reduction']:+.1%} | {r['macs']:,} | "
                     f"{r['flops']:,} | {-r['macs_reduction']:+.1%} | {wall} |")
    if s.get("budget"):
        lines += ["", _budget_sentence(s["budget"])]
    trained = {name: r["precision"] for name, r in s["stages"].items() if r.get("precision")}
    if trained:
        lines += ["", _precision_sentence(trained)]
    if s.get("bn_recalibration_images"):
        lines += ["", f"Pruned models' BN statistics were re-estimated on {s['bn_recalibration_images']} "
                      "training images (no weight update); the column before it shows the accuracy right after "
                      "pruning without that."]
    elif s.get("exact_removal"):
        lines += ["", "Pruning removed only channels whose |γ| was under 1e-3 (β folded into the next layer), so "
                      "the BN statistics were kept as trained, without re-estimation."]
    if s.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in s["plots"]]
    lines += ["", f"Command: `{s['command']}`", ""]
    return "\n".join(lines)


def _precision_sentence(trained: dict[str, str]) -> str:
    from compress.precision import label

    named = {n: label(p) for n, p in trained.items()}
    if len(set(named.values())) == 1:
        return (f"Training arithmetic: {next(iter(named.values()))} in every trained stage ({', '.join(named)}); "
                "weights are fp32.")
    return "Training arithmetic per stage: " + ", ".join(f"{n} {p}" for n, p in named.items()) + "; weights are fp32."


def stage_dirs(out: Path, sparse_dir: Path, stages: dict, passes: int) -> dict[str, Path]:
    """Stage name → its model directory, in the order the stages ran."""
    dirs = {"pretrained": out / "pretrained"} if "pretrained" in stages else {}
    dirs["sparse"] = sparse_dir
    for k in range(1, passes + 1):
        where = out if passes == 1 else out / f"pass{k}"
        suffix = "" if passes == 1 else f"-{k}"
        dirs["pruned" + suffix] = where / "pruned"
        dirs["finetuned" + suffix] = where / "finetuned"
    return dirs


def write_plots(out: Path, sparse_dir: Path, stages: dict, passes: int) -> list[str]:
    """The γ histogram after each stage (the paper's Figure 4), kept channels per layer and the training
    curves, as PNGs beside summary.md. A plot that fails is reported, never fatal to a finished run."""
    from safetensors.torch import load_file

    from compress import plots
    from compress.artifact import WEIGHTS

    dirs = stage_dirs(out, sparse_dir, stages, passes)
    written = []
    try:
        gammas = {}
        for name, d in dirs.items():
            bn_names = {n for n, w in stages[name]["widths"].items() if w["type"] == "BatchNorm2d"}
            state = load_file(str(d / WEIGHTS))
            gammas[name] = [state[f"{n}.weight"] for n in bn_names if f"{n}.weight" in state]
        first_plan = json.loads((dirs["pruned" + ("" if passes == 1 else "-1")] / "plan.json").read_text())
        written.append(plots.gamma_histogram(gammas, out / "gamma_histogram.png",
                                             threshold=first_plan.get("threshold")).name)
        for k in range(1, passes + 1):
            suffix = "" if passes == 1 else f"-{k}"
            plan = json.loads((dirs["pruned" + suffix] / "plan.json").read_text())
            written.append(plots.kept_channels_from_plan(plan, out / f"kept_channels{suffix}.png").name)
        curves = {name: plots.read_metrics(d / "metrics.jsonl") for name, d in dirs.items()
                  if (d / "metrics.jsonl").exists()}
        written.append(plots.training_curves(curves, out / "training_curves.png").name)
    except Exception as exc:  # noqa: BLE001 - plots must not cost a finished run
        log(f"warning: plots not written: {type(exc).__name__}: {exc}")
    return written
