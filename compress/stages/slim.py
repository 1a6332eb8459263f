"""The slimming run: sparse training → pruning → fine-tuning, resumable, with summary.json/.md and plots.

Re-running continues from the last finished stage. With `start_from` (a model directory, e.g. made by
``compress import``), sparse training starts from its trained weights instead of from scratch. With
`passes` > 1 (the paper's multi-pass scheme) prune-and-fine-tune repeats: each pass prunes to the request
on the remaining channels, and every fine-tuning but the last keeps the sparsity penalty so that the
next pass finds polarized γ again. A `pretrain_recipe` first trains the network without sparsity
(OUT/pretrained) and sparse training starts from it: sparse fine-tuning of a trained model, which is what
polarizes γ without an accuracy cost on short schedules (benchmarks/results/sparsity_study.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from compress.artifact import read_meta
from compress.atomic import write_json, write_text
from compress.data.options import DataOptions
from compress.errors import CompressError
from compress.request import PruneRequest, RequestConflict, slimming_keywords
from compress.restart import restart_advice, stage_chain, stage_option
from compress.stages._run import (RunOptions, check_not_another_model, finished, log, sparsity_label, sparsity_on,
                                 sync_and_read, writing)
from compress.stages.finetune import finetune
from compress.stages.prune import check_request, float64_note, prune
from compress.stages.summary import build_summary, summary_markdown, write_plots
from compress.stages.train import check_arch, train
from compress.training import Recipe, is_main_process


@dataclass(frozen=True)
class SlimOptions:
    """What a slimming run does: the recipes of its training stages, what each pass prunes to, the
    sparsity (λ of the paper's subgradient L1 on BN γ, or a SparsityConfig), the passes, and whether
    fine-tuning is distilled from the sparse model. compress.presets.resolve makes one from a preset."""

    train_recipe: Recipe
    finetune_recipe: Recipe
    prune: PruneRequest = PruneRequest(percent=0.5)
    sparsity: Any = 0.0
    pretrain_recipe: Recipe | None = None
    passes: int = 1
    distill: bool = False

    def __post_init__(self):
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
            raise CompressError(f"passes must be >= 1, got {self.passes!r}")
        if not isinstance(self.prune, PruneRequest):
            raise CompressError(f"prune must be a PruneRequest, got {type(self.prune).__name__}")
        self.prune.require_target()
        if self.prune.target_latency_ms is not None and self.passes > 1:
            # A second pass would start from a model that already meets the target.
            raise RequestConflict("{0} prunes once: it cannot be split over passes; drop {1}",
                                  "target_latency_ms", "passes")


def checked_options(options: SlimOptions) -> SlimOptions:
    """`options` with the request checked and the sparse stage steered to it; refused (CompressError) before any
    work when a backend this machine lacks is named or the sparse stage cannot build for the request."""
    request = check_request(options.prune)
    options = replace(options, prune=request, sparsity=steer_to(options.sparsity, request))
    if hasattr(options.sparsity, "check_ready"):
        options.sparsity.check_ready()
    return options


def slim(arch: str | None, data: DataOptions, out: str | Path, options: SlimOptions, *,
         arch_kwargs: dict | None = None, start_from: str | Path | None = None, sparse_dir: str | Path | None = None,
         run: RunOptions = RunOptions()) -> dict:
    """Run `options` on `arch` (or the model directory `start_from`) into the run directory `out`; returns
    summary.json. `sparse_dir` puts the sparse stage elsewhere than OUT/sparse, so that several runs
    (pruning ratios) can share one sparse model. A latency target is measured on this machine."""
    options = checked_options(options)
    if not run.resume and sparse_dir is not None and Path(sparse_dir).exists():
        raise CompressError(f"--no-resume would train the sparse stage in {sparse_dir} again, over a stage another "
                            "run may use: drop --no-resume to reuse it, or give a new --sparse-dir")
    _check_from_is_not_a_stage(start_from, Path(out), sparse_dir, options.passes)
    _check_sparse_dir(sparse_dir, Path(out), options.passes)
    check_not_another_model(Path(out), "slim")  # a run is stage folders; beside a model.json they describe nothing
    with writing(out, [("--from", start_from)], data), stage_chain():
        return _slim(arch, data, Path(out), options, arch_kwargs, start_from,
                     Path(sparse_dir) if sparse_dir is not None else None, run)


def check_floor_prunes(model, side: int, request: PruneRequest) -> None:
    """Refuse, before any training, a floor (min_keep, min_channels, round_to) under which the prune at the
    end would find nothing to remove: every unit's floor keeps all its channels, whatever γ training makes."""
    import torch

    from compress.slimming import least_budget

    example = torch.zeros(1, 3, side, side)
    kind = "params" if request.target_params is not None else "macs"
    least = least_budget(model, example, kind, **slimming_keywords(request))
    floor = (f"the floor (min_keep {request.min_keep:g}, min_channels {request.min_channels}, round_to "
             f"{request.round_to})")
    lower = "lower min_keep (--min-keep), min_channels or round_to (--round-to)"
    if least >= 1.0:
        raise CompressError(f"{floor} keeps every channel of every layer of {type(model).__name__}: pruning would "
                            f"remove nothing after training; {lower}")
    target = getattr(request, f"target_{kind}")
    if target is not None and target < least:
        raise CompressError(f"{floor} keeps at least {least:.3f} of the {'MACs' if kind == 'macs' else 'parameters'} "
                            f"of {type(model).__name__}: target_{kind} {target:g} cannot be met after training; "
                            f"{lower}, or ask for more")


def _check_from_is_not_a_stage(start_from, out: Path, sparse_dir, passes: int) -> None:
    """`--from OUT/finetuned --out OUT` would fine-tune into the very directory it starts from: the
    top-level guard sees only OUT, so each stage directory slim writes is checked here, before any work."""
    if start_from is None:
        return
    stages = [Path(sparse_dir) if sparse_dir is not None else out / "sparse"]
    for k in range(1, passes + 1):
        where = out if passes == 1 else out / f"pass{k}"
        stages += [where / "pruned", where / "finetuned"]
    source = Path(start_from).resolve()
    for stage in stages:
        if source == stage.resolve() or stage.resolve() in source.parents:
            raise CompressError(f"--from {start_from} is {stage}, a stage this run writes; copy it elsewhere "
                                "or use another --out")


def _check_sparse_dir(sparse_dir, out: Path, passes: int) -> None:
    """--sparse-dir names a sparse stage's own folder: one that is a run (its summary.json), OUT itself or
    another stage of this run would get a model directory written among files it does not describe."""
    if sparse_dir is None:
        return
    where = Path(sparse_dir).resolve()
    others = [out] + [(out if passes == 1 else out / f"pass{k}") / name for k in range(1, passes + 1)
                      for name in ("pruned", "finetuned")] + [out / "pretrained"]
    if where in {o.resolve() for o in others} or (where / "summary.json").exists():
        raise CompressError(f"--sparse-dir {sparse_dir} is a run folder or another stage, not a sparse stage's own "
                            "folder: give RUN/sparse, or a new folder")


def steer_to(sparsity, request: PruneRequest):
    """A sparsity config polarizes γ for the percent this run will prune (its 'auto' controller aims at
    it); under a MACs/params/latency budget the percent is not known in advance and the config's own stays.
    A targeted config is given the request itself: it pulls the channels that request removes."""
    from compress.sparsity import SparsityConfig
    from compress.sparsity_targeted import TargetedSparsity

    if isinstance(sparsity, TargetedSparsity):
        return sparsity.for_request(request)
    if isinstance(sparsity, SparsityConfig) and request.percent is not None and sparsity.percent != request.percent:
        return replace(sparsity, percent=request.percent)
    return sparsity


@dataclass
class _Slimming:
    """One slimming run under way: where it writes, what it does, and the stages finished so far."""

    out: Path
    sparse_dir: Path
    data: DataOptions
    options: SlimOptions
    run: RunOptions
    total: int
    stages: dict = field(default_factory=dict)
    times: dict = field(default_factory=dict)


def _slim(arch, data: DataOptions, out: Path, options: SlimOptions, arch_kwargs, start_from, sparse_dir,
          run: RunOptions) -> dict:
    if start_from is not None:
        from compress.info import load_checked

        model, meta = load_checked(Path(start_from))
        arch, side = meta["arch"] if arch is None else arch, meta["input_size"][-1]
    else:
        model, side = check_arch(arch, arch_kwargs, input_size=data.input_size), data.input_size or 32
    check_floor_prunes(model, side, options.prune)
    out.mkdir(parents=True, exist_ok=True)
    # summary.json marks a finished run: a rerun killed halfway must not leave the last run's beside new
    # stages, and a rerun refused before it changed anything must not lose them.
    main = is_main_process()  # under torchrun the other ranks leave the folder to rank 0
    watched = [out] + ([sparse_dir] if sparse_dir is not None else [])
    before = _stage_files(watched) if main else None
    moved = _set_aside(out) if main else []
    try:
        summary = _stages(arch, data, out, options, arch_kwargs, start_from, sparse_dir, run)
    except BaseException:  # refused, interrupted or failed: with no stage changed, the last summary stands
        if main and _stage_files(watched) == before:
            for path, aside in moved:
                os.replace(aside, path)
        raise
    if main:
        for aside in out.glob(ASIDE + "*"):
            aside.unlink(missing_ok=True)
    return summary


SUMMARY_FILES = ("summary.json", "summary.md", "gamma_histogram.png", "training_curves.png", "kept_channels*.png")
ASIDE = ".previous-"


def _set_aside(out: Path) -> list[tuple[Path, Path]]:
    """Move the last run's summary and plots out of sight (hidden names); returns (path, where it went)."""
    moved = []
    for pattern in SUMMARY_FILES:
        for path in sorted(out.glob(pattern)):
            aside = path.with_name(ASIDE + path.name)
            os.replace(path, aside)
            moved.append((path, aside))
    return moved


def _stage_files(folders: list[Path]) -> dict:
    """{file: (size, mtime)} of what the stages write under `folders`: the summary, hidden files (the lock)
    and what is set aside left out."""
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            name = path.relative_to(folder).parts
            if name[0].startswith(".") or (len(name) == 1 and any(path.match(p) for p in SUMMARY_FILES)):
                continue
            if path.is_file():
                st = path.stat()
                found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


def _stages(arch, data: DataOptions, out: Path, options: SlimOptions, arch_kwargs, start_from, sparse_dir,
            run: RunOptions) -> dict:
    pretrain = options.pretrain_recipe is not None and start_from is None
    s = _Slimming(out, sparse_dir or out / "sparse", data, options, run, total=1 + 2 * options.passes + pretrain)
    if pretrain:
        log(f"[1/{s.total}] training {arch} without sparsity ({options.pretrain_recipe.epochs} epochs) → "
            f"{out / 'pretrained'}")
        s.stages["pretrained"] = train(arch, data, out / "pretrained", options.pretrain_recipe,
                                       arch_kwargs=arch_kwargs, run=run)
        s.times["pretrained"] = s.stages["pretrained"]["training"]["wall_time_s"]
        start_from, arch_kwargs = out / "pretrained", None
    first = 1 + pretrain
    log(f"[{first}/{s.total}] sparse training {arch} ({sparsity_label(options.sparsity)}, "
        f"{options.train_recipe.epochs} epochs) → {s.sparse_dir}")
    with stage_option("--sparse-dir") if sparse_dir is not None else contextlib.nullcontext():
        s.stages["sparse"] = train(arch, data, s.sparse_dir, options.train_recipe, sparsity=options.sparsity,
                                   arch_kwargs=arch_kwargs, start_from=start_from, run=run)
    s.times["sparse"] = s.stages["sparse"]["training"]["wall_time_s"]
    warn_if_collapsed(s.sparse_dir)
    source = s.sparse_dir
    for k in range(1, options.passes + 1):
        source = _pass(s, k, source, step=first + 2 * k - 1)
    summary = build_summary(s.stages, s.times, data, options.prune.percent, options.sparsity)
    summary["passes"] = options.passes
    summary["plots"] = write_plots(out, s.sparse_dir, s.stages, options.passes)
    write_text(out / "summary.md", summary_markdown(summary))
    write_json(out / "summary.json", summary)  # last: its presence says the run finished
    return summary


def _pass(s: _Slimming, k: int, source: Path, step: int) -> Path:
    """Pass `k`: prune `source`, fine-tune the result; records both stages and returns the fine-tuned one."""
    options, run, passes = s.options, s.run, s.options.passes
    suffix = "" if passes == 1 else f"-{k}"
    where = s.out if passes == 1 else s.out / f"pass{k}"
    pruned_dir, tuned_dir = where / "pruned", where / "finetuned"
    t = time.time()
    log(f"[{step}/{s.total}] pruning to {options.prune.text()} → {pruned_dir}")
    parent_sha = read_meta(source)["weights_sha256"]
    if run.resume and finished(pruned_dir, True, parent_sha=parent_sha):
        differ = _prune_differences(pruned_dir, options.prune)
        if differ:
            raise CompressError(f"{pruned_dir} holds a prune made with other settings ({', '.join(differ)}); "
                                f"{restart_advice()}")
        pruned = read_meta(pruned_dir)
    elif is_main_process():
        pruned = prune(source, pruned_dir, options.prune, data=s.data, device=run.device)
        sync_and_read(pruned_dir)
    else:
        pruned = sync_and_read(pruned_dir)
    s.stages["pruned" + suffix] = pruned
    s.times["pruned" + suffix] = pruned["pruning"].get("wall_time_s", round(time.time() - t, 1))
    if pruned.get("accuracy") is not None:
        log(f"      accuracy right after pruning: {pruned['accuracy']:.2%}")
    if note := float64_note(pruned["pruning"]):
        log("      " + note)
    keep_sparse = options.sparsity if k < passes else 0.0
    log(f"[{step + 1}/{s.total}] fine-tuning ({options.finetune_recipe.epochs} epochs"
        f"{', ' + sparsity_label(keep_sparse) if sparsity_on(keep_sparse) else ''}) → {tuned_dir}")
    tuned = finetune(pruned_dir, s.data, tuned_dir, options.finetune_recipe,
                     distill_dir=s.sparse_dir if options.distill else None, sparsity=keep_sparse, run=run)
    s.stages["finetuned" + suffix] = tuned
    s.times["finetuned" + suffix] = tuned["training"]["wall_time_s"]
    return tuned_dir


def _prune_differences(pruned_dir: Path, request: PruneRequest) -> list[str]:
    """What the finished prune in `pruned_dir` was made with that `request` asks otherwise (its plan.json)."""
    try:
        plan = json.loads((pruned_dir / "plan.json").read_text())
    except (OSError, json.JSONDecodeError):
        return ["its plan.json is missing or unreadable"]
    return request.differences(plan) if isinstance(plan, dict) else ["its plan.json is not a JSON object"]


def warn_if_collapsed(sparse_dir: Path) -> None:
    """A penalty far too strong for the run (a pull budget spent in a few dozen steps) zeroes nearly every
    γ; every percent then prunes to the floor. Say so: the cure is a smaller --sparsity."""
    from compress import plots

    try:
        last = plots.read_metrics(sparse_dir / "metrics.jsonl")[-1]
    except (OSError, IndexError):
        return
    zero = last.get("gamma_under_1e-3")
    if zero is not None and zero > 0.95:
        log(f"warning: sparse training left {zero:.0%} of BN γ under 1e-3; pruning will keep only the floor of "
            "each layer. The penalty was too strong for this run: give a smaller --sparsity (a λ such as 1e-4, "
            "or budget:0.2)")
