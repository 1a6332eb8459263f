"""The zoo: does slimming work on the CNNs people deploy? One network per timm CNN family that uses
BatchNorm, the networks the issues named, ultralytics YOLOv8n and YOLO11n, and torchvision's CNNs.

Each network runs in its own `nice`d one-thread subprocess with a timeout (a hang or a crash costs one row):

1. build it with random weights (seed 0) and give every BN random statistics, γ and β, so nothing is
   trivially zero; put it in eval mode;
2. `compress.prune(model, x, percent=0.3)`: the time it takes, including the library's self-check; a
   `CompressError` here is a refusal, which is allowed when it names why;
3. exactness: in an unpruned copy, set γ = β = 0 on exactly the channels the plan removes, replay the plan
   on it (`Plan.apply`), and compare the outputs (every output of a detector): ≤ 1e-5 relative is exact;
   and at zero: in another copy, 40% of every BN's channels at γ = β = 0 (seeded), so that the 30% threshold
   is 0; its prune must remove no channel above zero and leave the outputs as they were (since 2026-12-07:
   the silenced copy silences what the prune chose, so it could not see a choice of live channels);
4. save and load the pruned network as a model directory without a wrapper class, outputs equal;
5. ONNX export of the loaded network with parity on every output (`compress.export`);
6. Torch-Pruning's own BNScalePruner on the same network (global, 30%, classifier kept), judged the same
   way: it passes when it prunes without an exception, the network runs, and on the γ = β = 0 copy its
   outputs stay within the same tolerance.

A row is `ok` (pruned, exact, saved, loaded, exported), `refused` (a one-line CompressError naming why), or
`FAIL` (a silent change, a broken network, or a raw exception): the acceptance is zero FAIL rows.

    python benchmarks/zoo.py                                  # everything, writes benchmarks/results/zoo.md/.json
    python benchmarks/zoo.py --names timm:resnet18,yolo:yolov8n --out /tmp/zoo
    python benchmarks/zoo.py --worker timm:mobilenetv3_large_100  # one network, JSON on stdout
    python benchmarks/zoo.py --bench-yolo                     # YOLOv8n at 30% against itself, ORT CPU latency
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERCENT = 0.3
EXACT_REL = 1e-5
PARITY_REL = 1e-5  # ONNX parity: max |Δ| within this share of the largest output (at least 1e-3)
TP_BUDGET_S = 300  # Torch-Pruning's graph can run for hours (rexnet, iformer): a row, not a hang
SPEED_LIMIT_S = 30.0
ROW_MARK = "ZOO-ROW "

# One network per timm module ("family") whose networks are CNNs with BatchNorm (no attention, no LayerNorm),
# the smallest of each family unless a more used one is named; found with timm 1.0.31's registry.
TIMM_FAMILIES = {
    "byobnet": "repvgg_a0", "convmixer": "convmixer_768_32", "cspnet": "cs3darknet_s", "cspnext": "cspnext_tiny",
    "densenet": "densenet121", "dla": "dla34", "dpn": "dpn48b", "efficientnet": "efficientnet_b0",
    "fasternet": "fasternet_t0", "fastvit": "fastvit_t8", "ghostnet": "ghostnet_100",
    "hardcorenas": "hardcorenas_a", "hgnet": "hgnetv2_b0", "hrnet": "hrnet_w18_small", "iformer": "iformer_t",
    "inception_resnet_v2": "inception_resnet_v2", "inception_v3": "inception_v3", "inception_v4": "inception_v4",
    "lcnetv2": "lcnetv2_small", "mobilenetv3": "mobilenetv3_large_100", "nasnet": "nasnetalarge",
    "pnasnet": "pnasnet5large", "regnet": "regnety_008", "repghost": "repghostnet_050", "repvit": "repvit_m1",
    "res2net": "res2net50_14w_8s", "resnest": "resnest14d", "resnet": "resnet50d", "resnetv2": "resnetv2_18",
    "rexnet": "rexnet_100", "selecsls": "selecsls42b", "senet": "legacy_seresnet18", "sknet": "skresnet18",
    "starnet": "starnet_s050", "tresnet": "tresnet_m", "vovnet": "ese_vovnet19b_dw", "xception": "legacy_xception",
    "xception_aligned": "xception41p",
}
# Networks the issue named, beyond their family's representative.
TIMM_NAMED = ["resnet18", "mobilenetv4_conv_small", "mixnet_s", "ghostnet_050", "lcnet_100", "tinynet_a",
              "mnasnet_100", "fbnetv3_b", "gernet_s"]
YOLO = ["yolov8n", "yolo11n"]
TORCHVISION = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf",
               "densenet121", "googlenet", "inception_v3", "mnasnet1_0", "shufflenet_v2_x1_0", "resnext50_32x4d",
               "wide_resnet50_2", "convnext_tiny", "squeezenet1_1", "vgg11_bn"]

TV_KWARGS = {n: {"aux_logits": False, "init_weights": True} for n in ("googlenet", "inception_v3")}


def all_names() -> list[str]:
    names = [f"timm:{n}" for n in TIMM_FAMILIES.values()] + [f"timm:{n}" for n in TIMM_NAMED]
    return names + [f"yolo:{n}" for n in YOLO] + [f"tv:{n}" for n in TORCHVISION]


# --- one network (runs in the subprocess) ----------------------------------------------------------------

def build(spec: str):
    """(model, input size) for a zoo name, random weights, eval mode."""
    import torch

    kind, _, name = spec.partition(":")
    torch.manual_seed(0)
    if kind == "timm":
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=10)
        size = 299 if name.startswith(("inception", "legacy_xception")) else 224
        size = 331 if name in ("nasnetalarge", "pnasnet5large") else size
        return model, size
    if kind == "yolo":
        os.environ.setdefault("YOLO_OFFLINE", "1")
        from ultralytics.nn.tasks import DetectionModel

        return DetectionModel(f"{name}.yaml", verbose=False), 640
    if kind == "tv":
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=10, **TV_KWARGS.get(name, {})), 224
    raise ValueError(f"unknown zoo name {spec!r}: timm:NAME, yolo:NAME or tv:NAME")


def randomize_bn(model, seed: int = 0) -> None:
    """Random γ, β and running statistics in every BN, as a trained network has (none exactly zero)."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=gen) * 0.9 + 0.1)
                    m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                if m.track_running_stats:
                    m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)


def outputs(model, x) -> list:
    """Every tensor a forward returns, flattened in a fixed order (detectors return nested tuples)."""
    import torch

    with torch.no_grad():
        out = model(x)
    flat = []

    def walk(o):
        if isinstance(o, torch.Tensor):
            flat.append(o.detach().float())
        elif isinstance(o, dict):
            for k in sorted(o):
                walk(o[k])
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(out)
    return flat


def max_rel_diff(a: list, b: list) -> float:
    """Largest difference over all outputs, relative to each output's largest magnitude."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        if not (bool(x.isfinite().all()) and bool(y.isfinite().all())):
            return float("inf")
        scale = max(float(x.abs().max()), 1e-12)
        worst = max(worst, float((x - y).abs().max()) / scale)
    return worst


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:300]}" if line else type(exc).__name__


def ours(spec: str, model, size: int, work: Path, row: dict) -> None:
    """Prune with the library, then check exactness, save/load and export; fills `row` step by step."""
    import torch

    import compress
    from compress.slimming import zero_removed_channels

    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    example = x[:1]
    reference_model = copy.deepcopy(model)
    at_zero = copy.deepcopy(model)
    row["step"] = "prune"
    t0 = time.perf_counter()
    try:
        plan = compress.prune(model, example, percent=PERCENT)
    except compress.CompressError as exc:
        row.update(status="refused", reason=str(exc).splitlines()[0][:300])
        return
    row["prune_s"] = round(time.perf_counter() - t0, 2)
    data = plan.to_dict()
    row.update(channels_before=data["channels_before"], channels_after=data["channels_after"],
               self_check=data.get("check"), skipped=len(data.get("skipped", [])))
    if row["channels_after"] >= row["channels_before"]:
        row.update(status="refused", reason="nothing prunable: every unit was left whole (see the plan's skipped)")
        return

    row["step"] = "exactness"
    zero_removed_channels(reference_model, data, example, beta=True)
    silenced = outputs(reference_model.eval(), x)
    replayed = copy.deepcopy(reference_model)
    plan.apply(replayed, example)
    row["exact_rel_diff"] = max_rel_diff(silenced, outputs(replayed.eval(), x))
    if not row["exact_rel_diff"] <= EXACT_REL:
        raise RuntimeError(f"pruned network differs from the silenced unpruned one by {row['exact_rel_diff']:.3g} "
                           f"(relative) although γ = β = 0 on every removed channel")

    row["step"] = "at zero"
    _prune_at_zero(at_zero, x, row)

    row["step"] = "save/load"
    directory = work / "model"
    classes = None if spec.startswith("yolo:") else [f"c{i}" for i in range(10)]  # YOLO lists its own names
    named = {}
    if spec.startswith("tv:"):  # torchvision builds through functions: the registry name says which
        name = spec.partition(":")[2]
        named = {"arch": f"tv_{name}", "arch_kwargs": {"num_classes": 10, "image_size": size, **TV_KWARGS.get(name, {})}}
    compress.save_model(replayed, directory, classes=classes, input_size=size, mean=[0.5] * 3, std=[0.25] * 3,
                        **named)
    loaded, _meta = compress.load_model(directory)
    row["load_rel_diff"] = max_rel_diff(outputs(replayed, x), outputs(loaded, x))
    if not row["load_rel_diff"] <= 1e-6:
        raise RuntimeError(f"the loaded network differs from the saved one by {row['load_rel_diff']:.3g}")

    row["step"] = "onnx"
    # Random weights and random BN statistics inflate outputs far beyond a trained network's (inception's
    # logits reach hundreds): the absolute tolerance scales with the largest output, as float32 rounding does.
    scale = max((float(t.abs().max()) for t in outputs(loaded, example)), default=1.0)
    parity = compress.Parity(atol=max(1e-3, PARITY_REL * scale))
    row["onnx_atol"] = parity.atol
    t0 = time.perf_counter()
    report = compress.export(loaded, work / "model.onnx", example=example, check=parity)
    row["export_s"] = round(time.perf_counter() - t0, 2)
    row["onnx_parity"] = (report.get("onnx") or {}).get("parity")
    row["step"] = "done"
    row["status"] = "ok"


ZERO_SHARE = 0.4  # of every BN's channels at γ = β = 0, above PERCENT: the threshold is then 0


def _prune_at_zero(model, x, row: dict) -> None:
    """Prune a copy whose removable channels compute nothing: the pruned network must equal the unpruned
    one itself, with no channel above the threshold removed."""
    import torch
    from torch import nn

    import compress

    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine:
                gone = torch.randperm(m.num_features, generator=gen)[:int(ZERO_SHARE * m.num_features)]
                m.weight[gone] = 0.0
                m.bias[gone] = 0.0
    before = outputs(model.eval(), x)
    try:
        data = compress.prune(model, x[:1], percent=PERCENT).to_dict()
    except compress.CompressError as exc:
        row["at_zero"] = {"refused": str(exc).splitlines()[0][:300]}
        return
    row["at_zero"] = {"threshold": data["threshold"], "removed_gamma_max": data["removed_gamma_max"],
                      "channels_after": data["channels_after"],
                      "rel_diff": max_rel_diff(before, outputs(model.eval(), x))}
    if data["threshold"] == 0 and data["removed_gamma_max"] > 0:
        raise RuntimeError(f"at a threshold of 0 the prune removed channels with |γ| up to "
                           f"{data['removed_gamma_max']:.3g}")
    if not row["at_zero"]["rel_diff"] <= EXACT_REL:
        raise RuntimeError(f"with 40% of the channels at γ = β = 0 the pruned network differs from the unpruned one "
                           f"by {row['at_zero']['rel_diff']:.3g} (relative)")


def torch_pruning(spec: str, model, size: int, row: dict) -> None:
    """Torch-Pruning's BNScalePruner on the same network, judged as ours is."""
    import torch
    import torch_pruning as tp
    from torch import nn

    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tp_row = {}
    row["torch_pruning"] = tp_row
    def out_of_time(signum, frame):
        raise TimeoutError(f"Torch-Pruning did not finish within {TP_BUDGET_S} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(TP_BUDGET_S)
    try:
        heads = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
        if spec.startswith("yolo:"):
            heads = [model.model[-1]]  # the detection head's outputs are boxes and classes
        t0 = time.perf_counter()
        pruner = tp.pruner.BNScalePruner(model, x[:1], importance=tp.importance.BNScaleImportance(),
                                         pruning_ratio=PERCENT, global_pruning=True, ignored_layers=heads)
        # Which channels TP removes is its decision; silence exactly those in a copy before it prunes.
        silenced_model = copy.deepcopy(model)
        groups = list(pruner.step(interactive=True))
        removed = _tp_silence(pruner.DG, model, silenced_model, groups)
        for group in groups:
            group.prune()
        tp_row["prune_s"] = round(time.perf_counter() - t0, 2)
        tp_row["channels_removed"] = removed
        diff = max_rel_diff(outputs(silenced_model, x), outputs(model, x))
        tp_row["exact_rel_diff"] = diff
        tp_row["status"] = "ok" if diff <= EXACT_REL else "changed"
    except TimeoutError as exc:
        tp_row.update(status="timeout", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - a peer's failure is a row, not the end of the sweep
        tp_row.update(status="exception", reason=_first_line(exc))
    finally:
        signal.alarm(0)


def _tp_silence(graph, model, silenced_model, groups) -> int:
    """Set γ = β = 0 in `silenced_model` on every BN channel the TP groups remove from `model`."""
    import torch
    from torch import nn

    names = {m: n for n, m in model.named_modules()}
    count = 0
    with torch.no_grad():
        for group in groups:
            for dep, idxs in group:
                mod = dep.target.module
                if isinstance(mod, nn.BatchNorm2d) and mod.affine and graph.is_out_channel_pruning_fn(dep.handler):
                    twin = silenced_model.get_submodule(names[mod])
                    twin.weight[list(idxs)] = 0.0
                    twin.bias[list(idxs)] = 0.0
                    count += len(idxs)
    return count


def run_one(spec: str, work: Path, row: dict) -> None:
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    row["step"] = "build"
    model, size = build(spec)
    model.eval()
    randomize_bn(model)
    row.update(size=size, build_s=round(time.perf_counter() - t0, 2))
    tp_model = copy.deepcopy(model)
    try:
        ours(spec, model, size, work, row)
    except Exception as exc:  # noqa: BLE001 - anything but a CompressError is a failure row
        row.update(status="FAIL", reason=f"{row.get('step')}: {_first_line(exc)}")
        traceback.print_exc()
    print(ROW_MARK + json.dumps(row, default=str), flush=True)  # ours is kept if the peer then hangs
    torch_pruning(spec, tp_model, size, row)


def worker(spec: str) -> int:
    row: dict = {"name": spec}
    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        try:
            run_one(spec, Path(tmp), row)
        except Exception as exc:  # noqa: BLE001 - building the network failed: still a row
            row.update(status="FAIL", reason=f"{row.get('step')}: {_first_line(exc)}")
            traceback.print_exc()
    print(ROW_MARK + json.dumps(row, default=str), flush=True)
    return 0


# --- the sweep (parent process) --------------------------------------------------------------------------

def run_worker(spec: str, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "YOLO_OFFLINE": "1"}
    cmd = ["nice", "-n", "10", sys.executable, str(Path(__file__).resolve()), "--worker", spec]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        rows = [line[len(ROW_MARK):] for line in partial.splitlines() if line.startswith(ROW_MARK)]
        if not rows:
            return {"name": spec, "status": "FAIL", "reason": f"timed out after {timeout:.0f} s"}
        row = json.loads(rows[-1])
        row["torch_pruning"] = {"status": "timeout", "reason": f"the worker timed out after {timeout:.0f} s"}
        return row
    rows = [line[len(ROW_MARK):] for line in done.stdout.splitlines() if line.startswith(ROW_MARK)]
    if not rows:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"name": spec, "status": "FAIL", "reason": f"worker died (exit {done.returncode}): {tail[:300]}"}
    row = json.loads(rows[-1])
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def machine() -> dict:
    flags = ""
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        pass
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("Model name")), "")
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f" {f} " in f" {flags} "]
    from importlib.metadata import PackageNotFoundError, version

    import torch

    # The installed distributions' versions: torch-pruning 1.6.1's module still says 1.6.0.
    versions = {"torch": torch.__version__}
    for key, dist in (("timm", "timm"), ("torch_pruning", "torch-pruning"), ("ultralytics", "ultralytics")):
        try:
            versions[key] = version(dist)
        except PackageNotFoundError:
            pass
    return {"cpu": model, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version(), **versions}


def markdown(rows: list[dict], info: dict, command: str) -> str:
    timm_rows = [r for r in rows if r["name"].startswith("timm:")]
    families = {f"timm:{n}" for n in TIMM_FAMILIES.values()}
    fam_rows = [r for r in timm_rows if r["name"] in families]

    def passed(rs, key=None):
        return sum(1 for r in rs if (r.get("torch_pruning", {}).get("status") if key else r.get("status")) == "ok")

    fails = [r for r in rows if r.get("status") == "FAIL"]
    slow = [r for r in rows if r.get("prune_s", 0) > SPEED_LIMIT_S]
    lines = [
        "# The zoo: slimming the CNNs people deploy", "",
        f"Command: `{command}`; {info['date']}{' (' + info['rerun'] + ')' if info.get('rerun') else ''} on "
        f"{info['cpu']} ({info['cores']} cores, {', '.join(info['isa'])}), "
        f"one thread per network, niced; torch {info['torch']}, timm {info['timm']}, torch-pruning "
        f"{info['torch_pruning']}, ultralytics {info.get('ultralytics', 'absent')}."
        + (f" {info['note']}" if info.get("note") else ""), "",
        f"- timm families: {passed(fam_rows)}/{len(fam_rows)} prune exactly "
        f"({passed(fam_rows) / max(len(fam_rows), 1):.0%}); Torch-Pruning's BNScalePruner: "
        f"{passed(fam_rows, 'tp')}/{len(fam_rows)}.",
        f"- every network: {passed(rows)} ok, {sum(r.get('status') == 'refused' for r in rows)} refused in one line, "
        f"{len(fails)} FAIL (silent change, broken network or raw exception).",
        f"- prune time over {SPEED_LIMIT_S:.0f} s: {', '.join(r['name'] for r in slow) or 'none'}.", "",
        f"Random weights (seed 0) and random BN statistics, eval mode; 30% of the BN channels by |γ|. *exact*: the "
        f"pruned network against the unpruned one with γ = β = 0 on the removed channels (≤ {EXACT_REL:g} relative "
        f"to the largest output). ONNX parity on 64 random images within max(1e-3, {PARITY_REL:g} × the largest "
        "output). *at zero*: another copy with 40% of every BN's channels at γ = β = 0, pruned at 30% (threshold 0), "
        "against itself unpruned: no channel above zero may go, and the outputs must stay within the same "
        "tolerance. TP BNScale: `ok` when its pruned network matches the same silenced copy, `changed` when it "
        f"does not, `exception`/`timeout` ({TP_BUDGET_S} s) otherwise.", "",
        "| network | px | ours | prune s | channels | exact (rel) | at zero (rel) | self-check | float64 look | TP BNScale | TP exact (rel) | reason |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | --- | --- | --- | ---: | --- |",
    ]
    for r in rows:
        tp_row = r.get("torch_pruning", {})
        check = r.get("self_check") or {}
        check_text = (f"{check.get('max_relative_difference', float('nan')):.1e} ≤ "
                      f"{check.get('tolerance', float('nan')):.0e}") if check else ""
        exact64 = check.get("float64") or {}
        exact64_text = (f"{exact64['max_relative_difference']:.1e} ≤ {exact64['tolerance']:.0e}"
                        if "max_relative_difference" in exact64 else
                        f"not run: {exact64['not_run']}" if "not_run" in exact64 else "")
        chans = f"{r.get('channels_before', '')} → {r.get('channels_after', '')}" if "channels_after" in r else ""
        exact = f"{r['exact_rel_diff']:.1e}" if "exact_rel_diff" in r else ""
        zero = r.get("at_zero") or {}
        zero_text = (f"{zero['rel_diff']:.1e}" if "rel_diff" in zero else
                     f"refused: {zero['refused']}" if "refused" in zero else "")
        tp_exact = f"{tp_row['exact_rel_diff']:.1e}" if "exact_rel_diff" in tp_row else ""
        reason = r.get("reason", "")
        if tp_row.get("reason"):
            reason = (reason + "; " if reason else "") + "TP: " + tp_row["reason"]
        lines.append(f"| {r['name']} | {r.get('size', '')} | {r.get('status', '')} | {r.get('prune_s', '')} | {chans} "
                     f"| {exact} | {zero_text.replace('|', '/')} | {check_text} | {exact64_text.replace('|', '/')} | {tp_row.get('status', '')} | {tp_exact} | {reason.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def sweep(names: list[str], out: Path, timeout: float) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, spec in enumerate(names, 1):
        row = run_worker(spec, timeout)
        rows.append(row)
        print(f"[{i}/{len(names)}] {spec}: {row.get('status')} {row.get('prune_s', '')} s "
              f"TP {row.get('torch_pruning', {}).get('status', '')} {row.get('reason', '')[:120]}", flush=True)
    return rows


def bench_yolo(out: Path, iters: int) -> int:
    """YOLOv8n pruned 30% (random weights, random BN as above) against its unpruned self: both saved as model
    directories and timed by `compress.bench` on ONNX Runtime CPU at batch 1, with the MACs ratio beside the
    speed-up. Random weights change no latency: the work of a forward depends on the shapes alone."""
    import torch

    import compress
    from compress.runtime.bench import BenchSettings
    from compress.runtime.report import write_report

    torch.set_num_threads(os.cpu_count() or 1)
    model, size = build("yolo:yolov8n")
    model.eval()
    randomize_bn(model)
    unpruned = copy.deepcopy(model)
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    compress.prune(model, example, percent=PERCENT)
    prune_s = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        dirs = {}
        for name, net in (("yolov8n", unpruned), ("yolov8n-slim30", model)):
            dirs[name] = Path(tmp) / name
            compress.save_model(net, dirs[name], input_size=size, mean=[0.0] * 3, std=[1.0] * 3)
        macs = {n: json.loads((d / "model.json").read_text())["macs"] for n, d in dirs.items()}
        # In turns as well (--paired): on a VM whose speed switches between states, one pass each is no verdict.
        settings = BenchSettings(backend="ort-cpu", batches=(1,), warmup=10, iters=iters, paired_blocks=30)
        command = f"python benchmarks/zoo.py --bench-yolo --iters {iters}"
        report = compress.bench(list(dirs.values()), settings, command=command)
        write_report(report, out)
    p50 = {v["name"]: next(r["end_to_end"]["p50_ms"] for r in v["latency"] if r.get("status") == "ok")
           for v in report["variants"]}
    base, slim = (p50[n] for n in sorted(p50, key=lambda n: "slim" in n))
    macs_ratio = macs["yolov8n"] / macs["yolov8n-slim30"]
    info = {**machine(), "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    pair = next((row for section in report.get("paired") or [] for row in section["rows"]
                 if row["verdict"] != "reference"), None)
    paired = pair and {"time_ratio": round(pair["ratio_median"], 4),
                       "ratio_ci95": [round(v, 4) for v in pair["ratio_ci95"]], "verdict": pair["verdict"]}
    summary = {"command": command, "machine": info, "prune_s": round(prune_s, 2), "macs": macs,
               "macs_ratio": round(macs_ratio, 3), "p50_ms": p50, "speedup": round(base / slim, 3),
               "paired": paired}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    in_turns = (f"; in turns ×{1 / paired['time_ratio']:.2f} (the pruned one's time ×{paired['time_ratio']:.3f}, "
                f"95% interval {paired['ratio_ci95'][0]:.3f}–{paired['ratio_ci95'][1]:.3f})" if paired else "")
    print(f"YOLOv8n 30%: MACs {macs['yolov8n'] / 1e9:.2f} G → {macs['yolov8n-slim30'] / 1e9:.2f} G "
          f"(×{macs_ratio:.2f}); ORT CPU batch 1 p50 {base:.2f} → {slim:.2f} ms (×{base / slim:.2f}){in_turns}; "
          f"pruned in {prune_s:.1f} s; report in {out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--names", help="comma-separated zoo names (timm:NAME, yolo:NAME, tv:NAME); default: all")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "zoo")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per network")
    ap.add_argument("--rerun", action="store_true", help="run --names again and replace their rows in OUT/zoo.json")
    ap.add_argument("--bench-yolo", action="store_true", help="time YOLOv8n at 30%% against itself instead")
    ap.add_argument("--iters", type=int, default=100, help="--bench-yolo: timed iterations per variant")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.bench_yolo:
        return bench_yolo(args.out / "yolov8n_bench", args.iters)
    names = args.names.split(",") if args.names else all_names()
    if args.rerun and not (args.out / "zoo.json").is_file():
        ap.error(f"--rerun replaces rows of a recorded sweep, and {args.out / 'zoo.json'} does not exist")
    rows = sweep(names, args.out, args.timeout)
    info = {**machine(), "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    command = "python benchmarks/zoo.py" + (f" --names {args.names}" if args.names else "")
    if args.rerun:  # replace these rows of the recorded sweep, keep the others and say so
        recorded = json.loads((args.out / "zoo.json").read_text())
        fresh = {r["name"]: r for r in rows}
        rows = [fresh.pop(r["name"], r) for r in recorded["rows"]] + list(fresh.values())
        earlier = recorded["machine"].get("rerun")
        info = {**recorded["machine"],
                "rerun": (f"{earlier}; " if earlier else "") + f"{', '.join(names)} rerun {info['date']}"}
        command = f"{recorded['command']}, then {command} --rerun"
    (args.out / "zoo.json").write_text(json.dumps({"machine": info, "command": command, "rows": rows}, indent=1))
    (args.out / "README.md").write_text(markdown(rows, info, command))
    print(f"wrote {args.out / 'README.md'}")
    return 1 if any(r.get("status") == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
