"""The pruning stage over model directories: a PruneRequest (or a plan.json replayed), then, with data,
the accuracy right after pruning and BN statistics re-estimated when the pruning changed the function.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from compress.artifact import derived_meta, load_model_dir
from compress.data.options import DataOptions
from compress.errors import CompressError
from compress.limits import read_json
from compress.request import COST, TARGETS, PruneRequest, RequestConflict, slimming_keywords
from compress.stages._run import check_classes, check_no_training_run, command_line, log, save_model_into, writing
from compress.training import evaluate, pick_device

RECALIBRATION_BATCH = 250  # images per BN re-estimation batch


def check_request(request: PruneRequest) -> PruneRequest:
    """Refuse what cannot be pruned to here before any work (a latency backend this machine lacks), and
    resolve round_to='auto' to this CPU's number, which plan.json records."""
    from compress.slimming import resolve_round_to

    if request.target_latency_ms is not None:
        from compress.latency_budget import check_latency_backend

        check_latency_backend(request.latency_backend)
    return request.with_round_to(resolve_round_to(request.round_to))


def prune(model_dir: str | Path, out: str | Path, request: PruneRequest = PruneRequest(), *,
          plan_path: str | Path | None = None, data: DataOptions | None = None, recalibrate: int = 2000,
          device: str | None = None) -> dict:
    """Prune the model directory `model_dir` into `out` (model directory + plan.json); returns model.json.

    `request` says what to prune to; with `plan_path` an earlier plan.json is replayed instead (the
    request then gives only the floor and β compensation). With `data`, the accuracy right after pruning
    is measured and, unless every removed channel had |γ| at zero, BN statistics are re-estimated on
    `recalibrate` training images with the training augmentation (0 disables it). A latency target is
    measured on this machine.
    """
    if plan_path is not None and request.target is not None:
        # A plan replays the channels it recorded: a target asks for others.
        raise RequestConflict("give one of {0}, {1}, {2}, {3} or {4}, not {4} and {5}", *TARGETS, "plan_path",
                              request.target)
    if plan_path is not None and request.importance != "gamma":
        raise RequestConflict("{0} does nothing with {1}: a plan replays the channels it recorded", COST, "plan_path")
    if plan_path is None and request.target is None:
        raise RequestConflict("give one of {0}, {1}, {2}, {3} or {4}", *TARGETS, "plan_path")
    request = check_request(request)
    if recalibrate == 1:
        raise CompressError("BN recalibration needs at least 2 training images, got 1 (--recalibrate)")
    with writing(out, [("MODEL_DIR", model_dir), ("--plan", plan_path)], data):
        check_no_training_run(Path(out), "prune", also=("model.dcz", "share_report.json"))
        return _prune(Path(model_dir), Path(out), request, plan_path, data, recalibrate, device)


def _prune(model_dir: Path, out: Path, request: PruneRequest, plan_path, data, recalibrate: int, device) -> dict:
    t0 = time.time()
    model, meta = load_model_dir(model_dir)
    model, plan = _pruned(model, meta, request, _read_plan(plan_path))
    plan["source"] = {"path": str(model_dir), "weights_sha256": meta.get("weights_sha256")}
    exact = exact_removal(plan, request)
    measured = {"accuracy": None, "accuracy_uncalibrated": None, "bn_recalibration_images": 0}
    if data is not None:
        measured = _measure(model, meta, data, recalibrate=0 if exact else recalibrate, device=device)
    pruning = {"percent": plan["percent"], "threshold": plan["threshold"],
               "channels_before": plan["channels_before"], "channels_after": plan["channels_after"],
               "params_before": meta["params"], "macs_before": meta["macs"], "min_keep": plan["min_keep"],
               "round_to": plan["round_to"], "budget": plan.get("budget"),
               "accuracy_before_pruning": meta.get("accuracy"),
               "accuracy_uncalibrated": measured["accuracy_uncalibrated"],
               "bn_recalibration_images": measured["bn_recalibration_images"], "exact_removal": exact,
               "self_check": _check_record(plan), "wall_time_s": round(time.time() - t0, 1)}
    new_meta = derived_meta(meta, model_dir, accuracy=measured["accuracy"], command=command_line(), pruning=pruning)
    return save_model_into(out, model, new_meta, beside={"plan.json": plan})


def _check_record(plan: dict) -> dict | None:
    """What model.json keeps of the self-check: the comparison, its tolerance, the float64 look."""
    check = plan.get("check")
    if not check:
        return None
    return {k: check[k] for k in ("max_relative_difference", "tolerance", "float64") if k in check}


def float64_note(pruning: dict) -> str | None:
    """One line for a pruning whose float64 self-check did not run, or None."""
    exact = (pruning.get("self_check") or {}).get("float64") or {}
    if "not_run" not in exact:
        return None
    return (f"note: the self-check passed in the model's own dtype, but its repeat in float64 did not run "
            f"({exact['not_run']})")


def unrounded_note(meta: dict, before: dict, block: int | None = None) -> str | None:
    """One line when a pruned model's convolutions keep widths off ONNX Runtime's CPU block (`block`, by
    default this machine's: compress.runtime.cpu_features.nchwc_block), or None: there the network can run
    slower than the unpruned one, as the quick preset's did with exact widths (benchmarks/results/main_job).
    Only the convolutions pruning narrowed count (`before`: the unpruned model's widths); a head's or a
    gate's own width is not rounding's to change."""
    if block is None:
        from compress.runtime.cpu_features import nchwc_block

        block = nchwc_block()
    convs = {n: w for n, w in (meta.get("widths") or {}).items()
             if w.get("type") == "Conv2d" and w.get("groups", 1) == 1}
    off = [n for n, w in convs.items()
           if w["out_channels"] % block and w["out_channels"] != (before.get(n) or {}).get("out_channels")]
    if not off:  # a block of 1 leaves none
        return None
    return (f"note: {len(off)} of {len(convs)} convolutions keep a width that is not a multiple of {block}, ONNX "
            "Runtime's CPU convolution block here; on its CPU kernels the network can run slower than the unpruned "
            "one (--round-to auto rounds the widths)")


def _read_plan(plan_path) -> dict | None:
    if plan_path is None:
        return None
    try:
        return read_json(Path(plan_path))
    except FileNotFoundError:
        raise CompressError(f"plan not found: {plan_path}") from None
    except OSError as exc:
        raise CompressError(f"cannot read plan {plan_path}: {exc.strerror or exc}") from None


def _pruned(model, meta: dict, request: PruneRequest, plan: dict | None):
    """The model pruned in place to `request`, or to `plan` replayed, and the plan it followed."""
    example = torch.zeros(1, *meta["input_size"])
    if request.target_latency_ms is not None:
        from compress.latency_budget import prune_to_latency

        return prune_to_latency(model, example, request, log=log)
    from compress.slimming import prune as prune_module

    return prune_module(model, request.percent if plan is None else 0.0, example, plan=plan,
                        target_macs=request.target_macs, target_params=request.target_params,
                        **slimming_keywords(request))


def _measure(model, meta: dict, data: DataOptions, *, recalibrate: int, device) -> dict:
    """Accuracy right after pruning, and after re-estimating BN statistics on `recalibrate` training images."""
    from compress.data import stratified_subset
    from compress.slimming import recalibrate_batchnorm

    data = data.for_model(meta)
    test = data.split("test")
    check_classes(meta, test)
    norm = meta["normalization"]
    dev = pick_device(device)
    accuracy = uncalibrated = evaluate(model, test, norm["mean"], norm["std"], device=dev)["accuracy"]
    recalibrated_on = 0
    if recalibrate > 0:
        calib = stratified_subset(data.split("train"), recalibrate, seed=data.seed)
        if len(calib) < 2:
            # BN in training mode cannot normalize one image ("Expected more than 1 value per channel")
            raise CompressError(f"BN recalibration needs at least 2 training images, got {len(calib)} "
                                "(--recalibrate)")
        lone_last = len(calib) % RECALIBRATION_BATCH == 1
        recalibrated_on = len(calib) - lone_last
        # With the training augmentation: the statistics the network was trained under. On plain images they
        # moved a trained PreResNet-56 by −4.7 pp and a VGG-19 ×0.25 by −0.6 pp with no channel removed.
        # A last batch of one image is left out, for the same reason.
        batches = (x for x, _ in calib.batches(RECALIBRATION_BATCH, norm["mean"], norm["std"], train=True,
                                               seed=data.seed, device=dev, drop_last=lone_last))
        recalibrate_batchnorm(model, batches)
        accuracy = evaluate(model, test, norm["mean"], norm["std"], device=dev)["accuracy"]
    model.cpu()
    return {"accuracy": accuracy, "accuracy_uncalibrated": uncalibrated, "bn_recalibration_images": recalibrated_on}


def exact_removal(plan: dict, request: PruneRequest) -> bool:
    """Every removed channel had |γ| under ZERO and β was folded into the next layer: the network computes
    what it did (up to zero padding at borders), so its BN statistics still hold, and re-estimating them on
    a few thousand images only adds noise (measured on plain images: −1.9 pp on issue 11's CPU reference,
    82.97% → 81.08%). The plan
    records the largest |γ| removed, whatever importance chose the channels; a plan without it (written
    before) says it through its threshold, which is |γ| only with the |γ| importance."""
    from compress.sparsity import ZERO

    if not plan.get("compensated", request.compensate):
        return False  # without compensation the removed channels' act(β) is dropped: a real change
    if "removed_gamma_max" in plan:
        return float(plan["removed_gamma_max"]) < ZERO
    return request.importance == "gamma" and float(plan.get("threshold", ZERO)) < ZERO
