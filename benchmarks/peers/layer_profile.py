"""Where the time of each method's network goes, convolution by convolution, on ONNX Runtime (CPU).

    python benchmarks/peers/layer_profile.py runs/peers-quick/vgg19x0.25/seed0 --batch 32 --threads 1

Each method's final model directory is exported as `compress bench` exports it (ONNX opset 17, dynamic
batch), run `--warmup` times and then `--iters` times with ONNX Runtime's profiler on, and every fused
convolution's kernel time is matched with its convolution's MACs (compress.runtime.onnx_flops) in graph order. The
table gives, per convolution, its output channels, MACs per image and median kernel time for each method,
so that equal MACs can be read against where each network spends them and how fast each layer runs them.
The figures hold for this machine, batch and thread count; run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

METHODS = ("toolkit", "tp-bnscale", "tp-groupnorm", "tp-l1")


def conv_rows(onnx_path: Path) -> list[dict]:
    """Per Conv node, in graph order: its output channels and MACs for one image."""
    import onnx

    from compress.runtime.onnx_flops import count_onnx

    model = onnx.load(str(onnx_path))
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    outs = [weights[n.input[1]][0] for n in model.graph.node if n.op_type == "Conv"]
    macs = [layer["macs"] for layer in count_onnx(model, per_layer=True)["layers"] if layer["op"] == "Conv"]
    if len(outs) != len(macs):
        raise SystemExit(f"{onnx_path}: {len(outs)} Conv weights but {len(macs)} counted Conv layers")
    return [{"channels": c, "macs": m} for c, m in zip(outs, macs)]


def kernel_times_us(onnx_path: Path, batch: int, threads: int, warmup: int, iters: int,
                    workdir: Path) -> tuple[list[float], float]:
    """Median kernel time (µs) of every Conv kernel ONNX Runtime ran, in execution order, and the sum of
    the other kernels' medians (BN, activations, additions, pooling, layout changes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / onnx_path.stem)
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).random((batch, *inp.shape[1:]), dtype=np.float32)
    for _ in range(warmup + iters):
        session.run(None, {inp.name: x})
    events = json.loads(Path(session.end_profiling()).read_text())
    convs: dict[str, list[float]] = {}
    others: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            # A BatchNormalization with no convolution before it to fold into runs as a depthwise 1x1 Conv
            # kernel ("..._bn_nchwc"): it is not one of the graph's convolutions.
            conv = e["args"].get("op_name") == "Conv" and "_bn_nchwc" not in e["name"]
            kind = convs if conv else others
            kind.setdefault(e["name"], []).append(float(e["dur"]))
    # Each kernel's events come in run order: the first `warmup` of them are the warm-up runs.
    other = sum(float(np.median(v[warmup:])) for v in others.values())
    return [float(np.median(v[warmup:])) for v in convs.values()], other  # first-run order: execution order


def profile(seed_dir: Path, methods: list[str], batch: int, threads: int, warmup: int, iters: int) -> dict:
    from compress.benchmarking import export_model_dir

    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for method in methods:
            final = seed_dir / method / "finetuned"
            if not (final / "model.json").is_file():
                print(f"skipped {method}: no {final}/model.json", file=sys.stderr)
                continue
            onnx_path = export_model_dir(final, tmp / f"{method}.onnx", lambda _msg: None)
            rows = conv_rows(onnx_path)
            times, other = kernel_times_us(onnx_path, batch, threads, warmup, iters, tmp)
            if len(times) != len(rows):
                raise SystemExit(f"{method}: ONNX Runtime ran {len(times)} Conv kernels for {len(rows)} Conv nodes "
                                 "(a fusion changed the count); this profile cannot match them")
            found[method] = {"convs": [{**r, "us": t} for r, t in zip(rows, times)], "other_us": other}
    return found


def table(found: dict, batch: int) -> list[str]:
    methods = list(found)
    head = "| conv | " + " | ".join(f"{m}: ch / MMAC / µs / GMAC/s" for m in methods) + " |"
    lines = [head, "| ---: | " + " | ".join("---" for _ in methods) + " |"]
    depth = max(len(v["convs"]) for v in found.values())
    for i in range(depth):
        cells = []
        for m in methods:
            if i >= len(found[m]["convs"]):
                cells.append("")
                continue
            r = found[m]["convs"][i]
            rate = r["macs"] * batch / r["us"] / 1e3 if r["us"] > 0 else float("nan")
            cells.append(f"{r['channels']} / {r['macs'] / 1e6:.2f} / {r['us']:.0f} / {rate:.0f}")
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    totals, other, whole = [], [], []
    for m in methods:
        macs = sum(r["macs"] for r in found[m]["convs"])
        us = sum(r["us"] for r in found[m]["convs"])
        totals.append(f"all / {macs / 1e6:.2f} / {us:.0f} / {macs * batch / us / 1e3:.0f}")
        other.append(f"{found[m]['other_us']:.0f} µs")
        whole.append(f"{us + found[m]['other_us']:.0f} µs")
    lines.append("| convolutions | " + " | ".join(totals) + " |")
    lines.append("| other kernels | " + " | ".join(other) + " |")
    lines.append("| all kernels | " + " | ".join(whole) + " |")
    return lines


def _at_least(low: int, high: int | None = None):
    """An argparse type for a whole number of at least `low` (and at most `high`, where given)."""
    def parse(text: str) -> int:
        value = int(text)
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def main(argv=None) -> None:
    from common import atomic_json

    from compress.errors import CompressError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seed_dir", type=Path, help="OUT/NET/seedS of a benchmarks/peers/run.py run")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch", type=_at_least(1), default=32)
    parser.add_argument("--threads", type=_at_least(1), default=1)
    parser.add_argument("--warmup", type=_at_least(0), default=20)
    parser.add_argument("--iters", type=_at_least(1), default=100)
    parser.add_argument("--json", type=Path, help="also write the per-layer figures here")
    args = parser.parse_args(argv)
    if args.json and args.json.resolve().is_relative_to(args.seed_dir.resolve()):
        parser.error(f"--json {args.json} is inside {args.seed_dir}, whose model directories are the inputs")
    try:
        found = profile(args.seed_dir, args.methods.split(","), args.batch, args.threads, args.warmup, args.iters)
    except (CompressError, OSError) as exc:
        raise SystemExit(f"layer_profile: {exc}") from None
    if not found:
        raise SystemExit(f"no method's finetuned model under {args.seed_dir}")
    print("\n".join(table(found, args.batch)))
    if args.json:
        atomic_json(args.json, {"batch": args.batch, "threads": args.threads, "layers": found})


if __name__ == "__main__":
    main()
