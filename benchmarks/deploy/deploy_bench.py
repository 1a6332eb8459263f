"""Full-width deployment report: FP32, slimmed, INT8 (cpu target) and slimmed + INT8, on ONNX Runtime
and OpenVINO at batch 1 and 32, with the MACs ratio beside every speed-up (issue 10, part 6).

Runs in stages so that the measuring can wait for a quiet machine:

    python benchmarks/deploy/deploy_bench.py prepare --models vgg19,resnet18,mobilenet_v2 --work W
    python benchmarks/deploy/deploy_bench.py bench   --models vgg19 --work W --backends ort-cpu,openvino --iters 200
    python benchmarks/deploy/deploy_bench.py report  --work W --out benchmarks/deploy/results/REPORT.md

`prepare` builds each network untrained (seeded), slims it, exports FP32 ONNX and quantizes both with
`compress.quantize`'s cpu recipe for this machine's instruction set. No trained full-width network
exists in this repository, so BatchNorm γ are drawn from |N(0, 1)| (seeded) to stand in for a trained
γ distribution: every slimmed structure is "a structure without trained weights", and INT8 is
calibrated on random images. Latency is what these runs measure; accuracy is not reported.
`bench` writes one report.json per model (the harness's schema); `report` renders them.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODELS = {
    # name: (registry name, constructor kwargs, input size)
    "vgg19": ("vgg19", {"num_classes": 10}, [3, 32, 32]),
    "resnet18": ("resnet18", {"num_classes": 1000, "image_size": 224}, [3, 224, 224]),
    "mobilenet_v2": ("mobilenet_v2", {"num_classes": 1000, "image_size": 224}, [3, 224, 224]),
}
VARIANTS = ("fp32", "slimmed", "int8", "slimmed-int8")
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
UNTRAINED = "structure without trained weights"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--round-to must be >= 1 or auto, got {value}")
    return value


def _export(model, path: Path, input_size, arch: str) -> None:
    from compress.exporting.onnx_export import export_onnx

    meta = {"classes": [str(i) for i in range(model_classes(model))], "mean": MEAN, "std": STD,
            "input_size": input_size, "arch": arch, "precision": "fp32", "source_sha256": "0" * 64,
            "toolkit_version": "0.1.0"}
    export_onnx(model, path, input_size=input_size, metadata=meta)


def model_classes(model) -> int:
    from torch import nn

    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


def prepare(args) -> None:
    import numpy as np
    import torch

    from compress.quantization import quantize_onnx, recipe_for
    from compress.slimming import prune
    from compress.models import create_model

    torch.set_num_threads(1)
    recipe = recipe_for("cpu", args.cpu_isa)
    _log(f"INT8 recipe: cpu, instruction set {recipe.isa} ({recipe.describe()['data_types']}, "
         f"reduce_range {recipe.reduce_range})")
    for name in args.models:
        registry, kwargs, input_size = MODELS[name]
        out = args.work / name
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(args.seed)
        model = create_model(registry, **kwargs).eval()
        gen = torch.Generator().manual_seed(args.seed)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data = torch.randn(m.num_features, generator=gen).abs()
        _export(model, out / "fp32.onnx", input_size, registry)
        example = torch.zeros(1, *input_size)
        prune_kwargs = {"round_to": args.round_to}
        params = inspect.signature(prune).parameters
        if args.target_macs is not None:
            if "target_macs" not in params:
                raise SystemExit("--target-macs needs compress.slimming.prune(target_macs=...), not in this checkout")
            prune_kwargs["target_macs"] = args.target_macs
        if args.target_latency_ratio is not None:
            # The latency budget as a fraction of this machine's own unpruned p50 (ort-cpu, batch 1), so
            # that the same command asks the same thing of any CPU.
            from compress.latency_budget import HarnessTimer, LatencySettings, prune_to_latency
            from compress.request import PruneRequest

            full_ms = HarnessTimer(LatencySettings(backend="ort-cpu"))(model, example)["p50_ms"]
            request = PruneRequest(target_latency_ms=args.target_latency_ratio * full_ms, backend="ort-cpu",
                                   round_to=args.round_to)
            slim, plan = prune_to_latency(model, example, request, log=_log)
        else:
            slim, plan = prune(model, args.percent, example, **prune_kwargs)
        _export(slim.eval(), out / "slimmed.onnx", input_size, registry)
        rng = np.random.default_rng(args.seed)
        calib = rng.standard_normal((args.calib_images, *input_size)).astype(np.float32)
        for src, dst in (("fp32", "int8"), ("slimmed", "slimmed-int8")):
            quantize_onnx(out / f"{src}.onnx", out / f"{dst}.onnx", calib, recipe=recipe)
        (out / "prepare.json").write_text(json.dumps({
            "model": name, "registry": registry, "kwargs": kwargs, "input_size": input_size, "seed": args.seed,
            "percent": args.percent, "target_macs": args.target_macs, "round_to": plan["round_to"],
            "target_latency_ratio": args.target_latency_ratio, "budget": plan.get("budget"),
            "pruned_fraction": plan["pruned_fraction"],
            "weights": UNTRAINED + " (BatchNorm γ ~ |N(0,1)|, seeded)", "int8_recipe": recipe.describe(),
            "calibration": f"{args.calib_images} random N(0,1) images"}, indent=2))
        _log(f"{name}: wrote {', '.join(v + '.onnx' for v in VARIANTS)} in {out}")


def bench(args) -> None:
    from compress.runtime.bench import BenchSettings, run_benchmark
    from compress.runtime.report import to_json

    settings = BenchSettings(batches=tuple(args.batches), iters=args.iters, warmup=args.warmup,
                             threads=args.threads)
    for name in args.models:
        d = args.work / name
        files = [d / f"{v}.onnx" for v in VARIANTS]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise SystemExit(f"run `prepare` first: missing {', '.join(missing)}")
        command = "python benchmarks/deploy/deploy_bench.py " + " ".join(sys.argv[1:])
        load_before = os.getloadavg()
        report = run_benchmark(files, settings, backends=args.backends, names=list(VARIANTS), command=command,
                               log=_log)
        # A shared machine makes figures noisy: the 1-minute load average before and after says how busy it was.
        report["load_average_1min"] = {"before": load_before[0], "after": os.getloadavg()[0]}
        (d / "report.json").write_text(to_json(report))
        _log(f"{name}: wrote {d / 'report.json'}")


def _p50(v: dict, batch: int):
    return next((r["end_to_end"]["p50_ms"] for r in v.get("latency") or []
                 if r.get("batch") == batch and r.get("status") == "ok"), None)


def _tput(v: dict, batch: int):
    return next((r["throughput_img_s"] for r in v.get("latency") or []
                 if r.get("batch") == batch and r.get("status") == "ok"), None)


def _cv(v: dict, batch: int):
    return next((r["end_to_end"]["cv"] for r in v.get("latency") or []
                 if r.get("batch") == batch and r.get("status") == "ok"), None)


def render(reports: dict[str, dict]) -> str:
    """Per model: variant x runtime rows, MACs ratio, p50 and speed-up at the first batch, img/s and
    speed-up at the last, both against FP32 on ONNX Runtime; the fastest runtime per variant and batch."""
    lines = ["# Deployment report: full-width networks on this CPU", ""]
    first = next(iter(reports.values()))
    system, settings = first["system"], first["settings"]
    cpu = system.get("cpu_features") or {}
    libs = system.get("libraries") or {}
    lines += [f"- date: {first['date']}", f"- command: `{first['command']}`",
              f"- machine: {system.get('cpu_model')} ({system.get('cpu_count')} CPUs); VNNI "
              f"{'yes' if cpu.get('vnni') else 'no'}, BF16 {'yes' if cpu.get('bf16') else 'no'} "
              f"(flags: {', '.join(cpu.get('flags') or [])})",
              f"- libraries: onnxruntime {libs.get('onnxruntime')}, openvino {libs.get('openvino')}",
              f"- runtimes {', '.join(settings.get('backends') or [])}; iterations per batch size are given per model",
              f"- weights: every variant is a {UNTRAINED} (latency only; no accuracy)",
              "- 1-minute load average (before → after the run, per model): " + ", ".join(
                  f"{m} {r['load_average_1min']['before']:.1f} → {r['load_average_1min']['after']:.1f}"
                  for m, r in reports.items() if r.get("load_average_1min")) + f" on {system.get('cpu_count')} CPUs",
              ""]
    b1, bn = settings["batches"][0], settings["batches"][-1]
    for model, report in reports.items():
        variants = report["variants"]
        base = next(v for v in variants if v.get("artifact_name") == "fp32" and v["backend"] == variants[0]["backend"])
        base_macs = (base.get("model") or {}).get("macs")
        fastest = {(f["artifact"], f["batch"]): f["backend"] for f in report.get("fastest") or []}
        lines += [f"## {model}", "",
                  f"Speed-ups against FP32 on {base['backend']}. p50 in ms with the coefficient of variation; "
                  f"{report['settings'].get('iters')} iterations after {report['settings'].get('warmup')} warm-up per "
                  f"batch size; command `{report['command']}`; {report['date']}.", "",
                  f"| variant | runtime (ran at) | MACs ratio | p50 @ b{b1} | speed-up @ b{b1} | img/s @ b{bn} | "
                  f"speed-up @ b{bn} |", "|---|---|---:|---:|---:|---:|---:|"]
        for v in variants:
            macs = (v.get("model") or {}).get("macs")
            ratio = base_macs / macs if macs and base_macs else None
            p1, t_n = _p50(v, b1), _tput(v, bn)
            s1 = _p50(base, b1) / p1 if p1 and _p50(base, b1) else None
            sn = t_n / _tput(base, bn) if t_n and _tput(base, bn) else None
            mark1 = "**" if fastest.get((v["artifact_name"], b1)) == v["backend"] else ""
            markn = "**" if fastest.get((v["artifact_name"], bn)) == v["backend"] else ""
            cv1 = _cv(v, b1)
            if v["status"] == "failed":
                lines.append(f"| {v['artifact_name']} | {v['backend']} | — | not measured: {v.get('error')} | | | |")
                continue
            lines.append(
                f"| {v['artifact_name']} | {v['backend']} ({v.get('ran_at')}) | {ratio:.2f} | "
                f"{mark1}{p1:.3f}{mark1} (cv {cv1:.0%}) | {s1:.2f}× | {markn}{t_n:,.0f}{markn} | {sn:.2f}× |"
                if None not in (ratio, p1, s1, t_n, sn, cv1) else
                f"| {v['artifact_name']} | {v['backend']} | {ratio} | {p1} | {s1} | {t_n} | {sn} |")
        lines += ["", "Bold: the fastest runtime for that variant and batch size.", ""]
    return "\n".join(lines) + "\n"


def report(args) -> None:
    reports = {}
    for d in sorted(p for p in args.work.iterdir() if (p / "report.json").is_file()):
        reports[d.name] = json.loads((d / "report.json").read_text())
    if not reports:
        raise SystemExit(f"no report.json under {args.work}: run `bench` first")
    text = render(reports)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        _log(f"wrote {args.out}")
    print(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    models = lambda text: [m for m in text.split(",") if m]  # noqa: E731
    for stage in ("prepare", "bench", "report"):
        p = sub.add_parser(stage)
        p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cnn-compress-deploy",
                       help="where the ONNX files and per-model report.json go (outside the repository)")
        if stage != "report":
            p.add_argument("--models", type=models, default=list(MODELS))
        if stage == "prepare":
            p.add_argument("--percent", type=float, default=0.5, help="slimming: fraction of BN channels removed")
            p.add_argument("--target-macs", type=float, default=None,
                           help="slimming to a MACs budget instead (needs prune(target_macs=...))")
            p.add_argument("--round-to", type=_round_to, default=1,
                           help="slimming: keep channel counts multiples of this; auto: ONNX Runtime's CPU block here")
            p.add_argument("--target-latency-ratio", type=float, default=None,
                           help="slimming to a latency budget instead: this fraction of the unpruned p50 "
                                "(ort-cpu, batch 1) measured here (compress.latency_budget)")
            p.add_argument("--cpu-isa", default="auto", choices=["auto", "vnni", "avx2", "arm64"])
            p.add_argument("--calib-images", type=int, default=32)
            p.add_argument("--seed", type=int, default=0)
        if stage == "bench":
            p.add_argument("--backends", type=models, default=["ort-cpu", "openvino"])
            p.add_argument("--batches", type=lambda t: [int(b) for b in t.split(",")], default=[1, 32])
            p.add_argument("--iters", type=int, default=200)
            p.add_argument("--warmup", type=int, default=10)
            p.add_argument("--threads", type=int, default=None)
        if stage == "report":
            p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    for m in getattr(args, "models", []):
        if m not in MODELS:
            parser.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    {"prepare": prepare, "bench": bench, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
