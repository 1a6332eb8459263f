"""Step 4: the GPU deployment report: unpruned against slimmed networks, on PyTorch's GPU paths.

Networks: VGG-19 (CIFAR, 32 px) unpruned, and slimmed to 70% of its channels with widths rounded to 8; and
ResNet-18 (224 px) unpruned, and slimmed to half its MACs (a budget), widths rounded to 8. VGG-19 is the
paper row's sparse network when that step ran (trained γ decide what goes); otherwise, and for ResNet-18
(no trained ImageNet weights here), BatchNorm γ are drawn from |N(0, 1)| (seeded) to stand in for a trained
distribution: a structure without trained weights, which is what latency depends on. Each is saved as a
model directory and measured in eager mode, with CUDA graphs and with torch.compile, at fp32, fp16 and bf16,
at each batch size. The report is the runtime harness's (schema compress.report/1), so `compress bench`'s
renderers read it; the speed-up of each slimmed network beside its MACs ratio is in `gpu_pairs`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from gpu_timing import Energy, measure
from gpu_window import SUB_MARGIN_S, StepOverrun, Window

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
UNTRAINED = "structure without trained weights (BN γ drawn from |N(0, 1)|, seeded)"


@dataclass(frozen=True)
class DeployScale:
    vgg_kwargs: dict
    resnet_size: int
    batches: tuple[int, ...]
    precisions: tuple[str, ...]
    seconds: float
    warmup: int
    compile_backend: str
    compile_estimate_s: float  # one network at one precision: two graphs (dynamic batch, and batch 1)
    min_iters: int
    compile_first: bool = False  # the dry run: one compiled variant first, so that the path surely runs once


FULL = DeployScale({}, 224, (1, 32, 256), ("fp32", "fp16", "bf16"), 0.5, 5, "inductor", 30.0, 10)
DRY = DeployScale({"width": 0.0625}, 64, (1, 2, 4), ("fp32", "fp16", "bf16"), 0.0, 1, "aot_eager", 8.0, 2, True)
MODES = ("eager", "cudagraph", "compile")


def _stand_in_gammas(model, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.randn(m.num_features, generator=gen).abs()


def networks(scale: DeployScale, work: Path, sparse_dir: Path | None) -> list[dict]:
    """The four networks as model directories: (name, family, dir, how it was made)."""
    import compress
    from compress.models import create_model

    out = []
    if sparse_dir is not None and (sparse_dir / "model.json").is_file():
        vgg, meta = compress.load_model(sparse_dir)
        vgg_note, classes = f"the paper row's sparse network ({sparse_dir})", meta["classes"]
        norm = meta["normalization"]
        vgg_mean, vgg_std, vgg_kwargs = norm["mean"], norm["std"], meta["arch_kwargs"]
    else:
        torch.manual_seed(0)
        vgg = create_model("vgg19", num_classes=10, **scale.vgg_kwargs)
        _stand_in_gammas(vgg)
        vgg_note, classes, vgg_mean, vgg_std = UNTRAINED, [str(i) for i in range(10)], MEAN, STD
        vgg_kwargs = {"num_classes": 10, **scale.vgg_kwargs}
    slim_vgg = copy.deepcopy(vgg).eval()
    compress.prune(slim_vgg, torch.zeros(1, 3, 32, 32), percent=0.7, round_to=8, min_keep=0.0)
    torch.manual_seed(0)
    resnet = create_model("resnet18", num_classes=1000, image_size=scale.resnet_size)
    _stand_in_gammas(resnet)
    slim_resnet = copy.deepcopy(resnet).eval()
    size = scale.resnet_size
    compress.prune(slim_resnet, torch.zeros(1, 3, size, size), target_macs=0.5, round_to=8)
    specs = [("vgg19", "vgg19", vgg.eval(), "vgg19", vgg_kwargs, 32, classes, vgg_mean, vgg_std, vgg_note),
             ("vgg19-slim70-r8", "vgg19", slim_vgg, "vgg19", vgg_kwargs, 32, classes, vgg_mean, vgg_std,
              f"70% of channels pruned, widths rounded to 8; from {vgg_note}"),
             ("resnet18", "resnet18", resnet.eval(), "resnet18", {"num_classes": 1000, "image_size": size}, size,
              [str(i) for i in range(1000)], MEAN, STD, UNTRAINED),
             ("resnet18-macs50-r8", "resnet18", slim_resnet, "resnet18", {"num_classes": 1000, "image_size": size},
              size, [str(i) for i in range(1000)], MEAN, STD, f"pruned to 50% of the MACs, widths rounded to 8; {UNTRAINED}")]
    for name, family, model, arch, kwargs, side, cls, mean, std, note in specs:
        where = work / name
        meta = compress.save_model(model.cpu(), where, classes=cls, input_size=side, mean=mean, std=std, arch=arch,
                                   arch_kwargs=kwargs)
        out.append({"name": name, "family": family, "dir": where, "note": note, "meta": meta})
    return out


def _variant(net: dict, mode: str, precision: str, device) -> dict:
    meta = net["meta"]
    return {"name": f"{net['name']} [{mode} {precision}]", "artifact": str(net["dir"]), "kind": "model_dir",
            "backend": f"torch-{mode}", "status": "ok", "error": None, "warnings": [],
            "file": {"size_bytes": (net["dir"] / "model.safetensors").stat().st_size, "what": "model.safetensors"},
            "model": {"params": meta["params"], "macs": meta["macs"], "flops": meta["flops"], "source": "model.json"},
            "precision": precision, "ran_at": precision, "artifact_name": net["name"],
            "runner": {"timer": "torch.cuda.Event" if device.type == "cuda" else "time.perf_counter",
                       "device": str(device), "compute_timing": "forward pass alone (input already on the device)",
                       "memory_format": "channels_last", "mode": mode},
            "latency": [], "memory": None, "power": None, "accuracy": None,
            "reference_accuracy": meta.get("accuracy"), "widths": None, "model_json": str(net["dir"] / "model.json"),
            "made_from": net["note"]}


def _load(net: dict, precision: str, mode: str, scale: DeployScale, device):
    import compress
    from gpu_timing import DTYPES

    model, _ = compress.load_model(net["dir"])
    model = model.to(device=device, dtype=DTYPES[precision]).to(memory_format=torch.channels_last).eval()
    if mode == "compile":
        model = torch.compile(model, backend=scale.compile_backend)
    return model


def bench_variant(net, mode, precision, scale, device, energy) -> dict:
    v = _variant(net, mode, precision, device)
    side = net["meta"]["input_size"]
    spec = {"device": device, "input_shape": tuple(side), "mean": net["meta"]["normalization"]["mean"],
            "std": net["meta"]["normalization"]["std"], "warmup": scale.warmup, "seconds": scale.seconds,
            "min_iters": scale.min_iters}
    model = _load(net, precision, mode, scale, device)
    # Compiled: the dynamic-batch graph first (batch 1 always gets its own, specialized graph).
    order = sorted(scale.batches, reverse=True) if mode == "compile" else list(scale.batches)
    for batch in order:
        try:
            v["latency"].append(measure(model, batch, precision, mode, spec, energy))
        except StepOverrun:
            raise
        except Exception as exc:  # noqa: BLE001 - this batch fails, the others still run
            v["latency"].append({"batch": batch, "status": "failed", "error": f"{type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]})
    v["latency"].sort(key=lambda r: r["batch"])
    peaks = [r.get("peak_memory_bytes") for r in v["latency"] if r.get("peak_memory_bytes")]
    v["memory"] = {"host": None, "gpu": {"torch_max_allocated_bytes": max(peaks)} if peaks else {}}
    powered = {str(r["batch"]): r.pop("power") for r in v["latency"] if r.get("power")}
    if powered:
        v["power"] = {"source": "nvml", "rails": "nvmlDeviceGetTotalEnergyConsumption (GPU board)",
                      "per_batch": powered, "note": "energy counter read before and after each timed loop; "
                      "average power = energy / loop time (idle share included)"}
    elif energy is not None and energy.why:
        v["warnings"].append(energy.why)
    if any(r["status"] != "ok" for r in v["latency"]):
        v["status"] = "partial" if any(r["status"] == "ok" for r in v["latency"]) else "failed"
    return v


def _plan(nets: list[dict], scale: DeployScale, cuda: bool) -> list[tuple[dict, str, str, float, str | None]]:
    """(network, mode, precision, estimate, skip reason) in the order they run, so that what the time cuts
    leaves whole pairs (unpruned and slimmed, same mode and precision): eager and CUDA graphs at bf16 (the
    precision a GPU deployment would pick), fp32 and fp16, then compiling, pair by pair, bf16 first. The dry
    run (compile_first) puts one compiled variant first, so that the path surely runs once."""
    per = len(scale.batches) * (scale.seconds + 0.2) + 2
    prefs = sorted(scale.precisions, key=lambda p: ("bf16", "fp32", "fp16").index(p))
    fixed = [(n, m, p, per, None if m != "cudagraph" or cuda else "CUDA graphs need a CUDA GPU")
             for p in prefs for m in ("eager", "cudagraph") for n in nets]
    compiled = [(n, "compile", p, per + scale.compile_estimate_s, None) for p in prefs for n in nets]
    if scale.compile_first:
        return compiled[:1] + fixed + compiled[1:]
    return fixed + compiled


def run(scale: DeployScale, work: Path, sparse_dir: Path | None, device, window: Window, budget_s: float,
        command: str) -> dict:
    from compress.runtime.report import build_report, validate_report
    from compress.runtime.sysinfo import collect_system

    import time

    own = Window(min(budget_s, window.left()), SUB_MARGIN_S)
    t0 = time.monotonic()
    nets = networks(scale, work, sparse_dir)
    print(f"deploy: {len(nets)} networks pruned and saved in {time.monotonic() - t0:.1f} s", flush=True)
    energy = Energy() if device.type == "cuda" else None
    variants, skipped = [], []
    for net, mode, precision, estimate, reason in _plan(nets, scale, device.type == "cuda"):
        fits, why = own.admits(estimate)
        if reason or not fits:
            skipped.append({"variant": f"{net['name']} [{mode} {precision}]", "reason": reason or why})
            continue
        label = f"{net['name']} [{mode} {precision}]"
        try:
            with own.guard(estimate * 3):
                variants.append(bench_variant(net, mode, precision, scale, device, energy))
            print(f"deploy: {label}: {variants[-1]['status']}", flush=True)
        except StepOverrun as exc:
            skipped.append({"variant": label, "reason": f"ran out of time ({exc})"})
            print(f"deploy: {label}: ran out of time", flush=True)
    settings = {"backend": "torch-eager", "backends": [f"torch-{m}" for m in MODES], "batches": list(scale.batches),
                "warmup": scale.warmup, "iters": None, "duration_s": scale.seconds,
                "power_source": "nvml" if energy is not None and energy.handle else "none",
                "precisions": list(scale.precisions), "data": None, "accuracy_images": None}
    report = build_report(variants, settings, collect_system(gpu=device.type == "cuda"), command)
    report["skipped"] = skipped
    report["gpu_pairs"] = pairs(variants)
    if energy is not None and energy.why:
        report["warnings"].append(energy.why)
    return validate_report(report)


def _p50(v: dict, batch: int, which: str) -> float | None:
    row = next((r for r in v["latency"] if r["batch"] == batch and r["status"] == "ok"), None)
    return row[which]["p50_ms"] if row else None


def pairs(variants: list[dict]) -> list[dict]:
    """Each slimmed network against its unpruned one, same mode, precision and batch: speed-ups beside the MACs ratio."""
    by_name = {v["name"]: v for v in variants}
    out = []
    for v in variants:
        family = v["artifact_name"]
        if family not in ("vgg19-slim70-r8", "resnet18-macs50-r8"):
            continue
        base = by_name.get(v["name"].replace(family, family.split("-")[0], 1))
        if base is None:
            continue
        macs_ratio = base["model"]["macs"] / v["model"]["macs"]
        for row in v["latency"]:
            b = row["batch"]
            comp = [_p50(base, b, "compute"), _p50(v, b, "compute")]
            e2e = [_p50(base, b, "end_to_end"), _p50(v, b, "end_to_end")]
            if None in comp or None in e2e:
                continue
            speed = comp[0] / comp[1]
            out.append({"network": family, "mode": v["runner"]["mode"], "precision": v["precision"], "batch": b,
                        "macs_ratio": macs_ratio, "speedup_compute_p50": speed,
                        "speedup_end_to_end_p50": e2e[0] / e2e[1], "speedup_over_macs_ratio": speed / macs_ratio})
    return out


def markdown(report: dict) -> list[str]:
    lines = ["## GPU deployment: slimmed against unpruned", "",
             "Speed-up = unpruned p50 / slimmed p50 at the same mode, precision and batch (compute: the forward pass "
             "alone; end-to-end: with the copies to and from the device). The full per-variant tables (p50/p99, "
             "img/s, peak memory, energy per image) are in report.md, rendered from report.json.", "",
             "| network | mode | precision | batch | MACs ratio | speed-up (compute) | speed-up (end-to-end) | "
             "speed-up / MACs ratio |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for p in report.get("gpu_pairs", []):
        lines.append(f"| {p['network']} | {p['mode']} | {p['precision']} | {p['batch']} | {p['macs_ratio']:.2f} | "
                     f"{p['speedup_compute_p50']:.2f}× | {p['speedup_end_to_end_p50']:.2f}× | "
                     f"{p['speedup_over_macs_ratio']:.2f} |")
    at_256 = [p for p in report.get("gpu_pairs", []) if p["network"] == "vgg19-slim70-r8" and p["batch"] == max(
        (q["batch"] for q in report.get("gpu_pairs", [])), default=0)]
    for p in sorted(at_256, key=lambda p: -p["speedup_over_macs_ratio"])[:1]:
        lines += ["", f"Slimmed VGG-19 at batch {p['batch']}: at best {p['speedup_compute_p50']:.2f}× faster ({p['mode']} "
                      f"{p['precision']}) for a MACs ratio of {p['macs_ratio']:.2f}: {p['speedup_over_macs_ratio']:.2f} of "
                      f"it (acceptance: ≥ 0.8: {'yes' if p['speedup_over_macs_ratio'] >= 0.8 else 'no'})."]
    if report.get("skipped"):
        lines += ["", "Not measured:", ""] + [f"- {s['variant']}: {s['reason']}" for s in report["skipped"]]
    return lines + [""]
