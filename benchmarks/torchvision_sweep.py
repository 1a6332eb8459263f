"""Does every torchvision classification CNN slim? Sparse steps, prune 30%, ONNX export, parity.

For each name that `compress.models.tv.torchvision_names()` lists, in its own `nice`d subprocess with one
thread and a timeout (a hang or a crash costs one row, not the sweep):

1. build it untrained with `compress.models.create_model(name, num_classes=10, image_size=S)` at the
   smallest size S of SIZES the network accepts (64 px for most; torchvision's own stems there);
2. a few SGD steps on random data with `compress.SparsityRegularizer` (L1 subgradient on BN γ);
3. `compress.slimming.prune(model, 0.3, x)` with its default floor (min_keep 0.2);
4. check the pruned model runs, and that its parameters and MACs dropped;
5. `compress.exporting.onnx_export.export_onnx`, then `compress.exporting.parity.check_parity` in ONNX Runtime on a batch.

Networks go cheapest first (torchvision's GFLOPs at 224 px), so a total time cap leaves the big ones
as "not run: time cap" rows instead of silently dropping them.

    python benchmarks/torchvision_sweep.py                        # all, writes results/torchvision_sweep.md
    python benchmarks/torchvision_sweep.py --names resnet18,googlenet --out /tmp/t.md
    python benchmarks/torchvision_sweep.py --worker resnet18      # one network, JSON on stdout
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (64, 75, 96, 128, 160, 224)
PERCENT = 0.3
SPARSITY = 1e-4
STEPS = 3
TRAIN_BATCH = 4
PARITY_BATCH = 8
# Training holds weights, gradients, momentum and torch-pruning's traced graph: ~16 bytes a parameter,
# which for regnet_y_128gf (644M) is more than this shared 23 GiB machine can give one job.
DEFAULT_MAX_PARAMS = 200_000_000
# Diagnoses of the failures met so far, matched against a row's error and the frame that raised it.
# A failure that matches none is reported as undiagnosed rather than guessed at.
CAUSES = [
    (r"update_reshape_index_mapping|cannot trace .*channel dependencies.*ZeroDivisionError",
     "torch-pruning limitation: its dependency graph cannot trace channel_shuffle's 5-D view/transpose "
     "(VainF/Torch-Pruning#14), so no graph is built"),
    (r"INDICES element is out of DATA bounds.*prune|prune.*INDICES element is out of DATA bounds",
     "our slimming code: grouped (not depthwise) conv; prune() keeps different channel positions in each "
     "group, torch-pruning's ConvPruner.prune_in_channels needs the same positions in every group "
     "(fix proposed for compress/slimming.py)"),
    (r"has no BatchNorm", "no BatchNorm2d layers: not slimmable by design (network slimming prunes by BN γ)"),
    (r"^not run: ", "not attempted"),
]
DIAGNOSIS_MARK = "<!-- hand-written diagnosis below: the script keeps everything after this line -->"


# --- one network (runs in the subprocess) ------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line[:300]}" if line else type(exc).__name__


def _build_at_smallest_size(name: str):
    from compress.models import TV_PREFIX, create_model

    refused = []
    for size in SIZES:
        try:
            # tv_ keeps torchvision's vgg11 / densenet121 from resolving to our CIFAR families of that name
            return create_model(TV_PREFIX + name, num_classes=10, image_size=size), size, refused
        except ValueError as exc:
            if "does not run on" not in str(exc):
                raise
            refused.append(size)
    raise ValueError(f"runs at none of {SIZES}")


def run_one(name: str, work: Path, row: dict) -> None:
    """Fill `row` as the stages pass, so a failure leaves what was measured up to it."""
    import numpy as np
    import torch
    from torch import nn

    from compress.errors import CompressError
    from compress.measure import count_params_macs
    from compress.slimming import prune, recalibrate_batchnorm
    from compress.sparsity import SparsityRegularizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    row["stage"] = "build"
    timings = {}
    t0 = time.perf_counter()
    model, size, refused = _build_at_smallest_size(name)
    row.update(size=size, refused_sizes=refused)
    input_size = (3, size, size)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    norms = sorted({type(m).__name__ for m in model.modules()
                    if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))})
    row.update(batchnorm2d=len(bns), norm_layers=norms)
    row["params_before"], row["macs_before"] = count_params_macs(model, input_size)
    timings["build"] = time.perf_counter() - t0

    if bns:
        row["stage"] = "sparse training"
        t0 = time.perf_counter()
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        losses = []
        l1 = SparsityRegularizer(model, SPARSITY)
        for _ in range(STEPS):
            x = torch.randn(TRAIN_BATCH, *input_size)
            y = torch.randint(0, 10, (TRAIN_BATCH,))
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            l1.step()
            opt.step()
            losses.append(float(loss.detach()))
        row["losses"] = losses
        if not all(np.isfinite(losses)):
            raise RuntimeError(f"training loss is not finite: {losses}")
        # A few steps leave the running statistics near their init (0, 1); eval-mode activations then
        # grow layer after layer (inception_v3's logits reached 1e12). Measure them, as a trained net has.
        recalibrate_batchnorm(model, [torch.randn(TRAIN_BATCH, *input_size) for _ in range(4)])
        timings["train"] = time.perf_counter() - t0

    row["stage"] = "prune"
    t0 = time.perf_counter()
    model.eval()
    try:
        model, plan = prune(model, PERCENT, torch.randn(1, *input_size))
    except CompressError as exc:
        row["prune_error"] = str(exc)
        raise
    timings["prune"] = time.perf_counter() - t0
    row.update(groups=len(plan["groups"]), channels_before=plan["channels_before"],
               channels_after=plan["channels_after"])

    row["stage"] = "pruned forward"
    x = torch.randn(PARITY_BATCH, *input_size)
    with torch.no_grad():
        out = model(x)
    if tuple(out.shape) != (PARITY_BATCH, 10) or not bool(torch.isfinite(out).all()):
        raise RuntimeError(f"pruned model gives {tuple(out.shape)} logits, finite={bool(torch.isfinite(out).all())}")
    row["params_after"], row["macs_after"] = count_params_macs(model, input_size)
    if not (row["params_after"] < row["params_before"] and row["macs_after"] < row["macs_before"]):
        raise RuntimeError("pruning did not reduce both params and MACs")

    row["stage"] = "onnx export"
    from compress.exporting.onnx_export import export_onnx
    from compress.exporting.parity import check_parity

    t0 = time.perf_counter()
    meta = {"classes": [f"c{i}" for i in range(10)], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "arch": name, "source_sha256": "0" * 64, "toolkit_version": "sweep"}
    path = export_onnx(model, work / f"{name}.onnx", input_size=list(input_size), metadata=meta)
    timings["export"] = time.perf_counter() - t0
    row["stage"] = "parity"
    t0 = time.perf_counter()
    result = check_parity(model, path, x.numpy(), raise_on_failure=False)
    timings["parity"] = time.perf_counter() - t0
    row.update(max_abs_diff=result.max_abs_diff, top1_agreement=result.top1_agreement, atol=result.atol,
               logit_scale=result.logit_scale, parity_passed=result.passed)
    if not result.passed:
        raise RuntimeError(f"ONNX parity failed: {result.summary()}")
    row["stage"] = "done"
    row["timings_s"] = {k: round(v, 2) for k, v in timings.items()}


def worker(name: str) -> int:
    row: dict = {"name": name}
    with tempfile.TemporaryDirectory(prefix="tvsweep-") as tmp:
        try:
            run_one(name, Path(tmp), row)
            row["ok"] = True
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row
            traceback.print_exc()
            row.update(ok=False, error=_first_line(exc), where=_where(exc.__traceback__))
    print("SWEEP-ROW " + json.dumps(row, default=str), flush=True)
    return 0


def _where(tb) -> str:
    """The innermost frame outside the standard library: which package's code raised."""
    frames = traceback.extract_tb(tb) if tb is not None else []
    for f in reversed(frames):
        if "/torch_pruning/" in f.filename or "/torchvision/" in f.filename or str(ROOT) in f.filename:
            return f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}"
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""


# --- the sweep (parent process) ----------------------------------------------------------------------

def ordered_names(names: list[str]) -> list[tuple[str, float, int]]:
    """(name, GFLOPs at 224 px, params) from torchvision's weight metadata, cheapest first."""
    import torchvision.models as tvm

    out = []
    for n in names:
        meta = tvm.get_model_weights(n).DEFAULT.meta
        out.append((n, float(meta.get("_ops", 0.0)), int(meta.get("num_params", 0))))
    return sorted(out, key=lambda t: (t[1], t[0]))


def run_sweep(names, timeout: float, total_cap: float, max_params: int, log_dir: Path) -> list[dict]:
    log_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    start = time.monotonic()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for name, gflops, params in ordered_names(names):
        left = total_cap - (time.monotonic() - start)
        if params > max_params:
            rows.append({"name": name, "ok": False, "not_run": True,
                         "error": f"not run: memory cap ({params / 1e6:.0f}M params > {max_params / 1e6:.0f}M; "
                                  "training + graph need ~16 bytes/param)"})
            continue
        if left < 30:
            rows.append({"name": name, "ok": False, "not_run": True,
                         "error": f"not run: time cap ({total_cap:.0f} s for the sweep spent)"})
            continue
        limit = min(timeout, left)
        cmd = ["nice", "-n", "10", sys.executable, str(Path(__file__).resolve()), "--worker", name]
        t0 = time.monotonic()
        print(f"[{time.monotonic() - start:7.0f} s] {name} ({gflops:g} GFLOPs@224, limit {limit:.0f} s) ...",
              end=" ", flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env, cwd=ROOT)
            log = proc.stdout + proc.stderr
            found = [ln for ln in proc.stdout.splitlines() if ln.startswith("SWEEP-ROW ")]
            if found:
                row = json.loads(found[-1][len("SWEEP-ROW "):])
            else:
                tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
                row = {"name": name, "ok": False,
                       "error": f"worker died (exit {proc.returncode}{_signal_name(proc.returncode)}): {tail[0][:200]}"}
        except subprocess.TimeoutExpired as exc:
            log = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            row = {"name": name, "ok": False, "error": f"timeout after {limit:.0f} s"}
        row["wall_s"] = round(time.monotonic() - t0, 1)
        (log_dir / f"{name}.log").write_text(log)
        print("ok" if row.get("ok") else row.get("error"), f"({row['wall_s']} s)", flush=True)
        rows.append(row)
    return rows


def _signal_name(code: int) -> str:
    if code is not None and code < 0:
        import signal

        try:
            return f", {signal.Signals(-code).name}"
        except ValueError:
            return ""
    return ""


# --- the report --------------------------------------------------------------------------------------

def _fmt_count(n) -> str:
    if n is None:
        return ""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _arrow(before, after) -> str:
    if before is None:
        return ""
    if after is None:
        return _fmt_count(before)
    return f"{_fmt_count(before)} → {_fmt_count(after)} ({100 * (after - before) / before:+.0f}%)"


def _cause(row: dict) -> str:
    if row.get("ok"):
        return ""
    text = f"{row.get('stage', '')} {row.get('error', '')} {row.get('where', '')}"
    for pattern, cause in CAUSES:
        if re.search(pattern, row.get("error", "")) or re.search(pattern, text):
            return cause
    return "undiagnosed"


def _reason(row: dict) -> str:
    if row.get("ok"):
        return "✓"
    if row.get("not_run"):
        return row["error"]
    if row.get("batchnorm2d") == 0:
        norms = ", ".join(row.get("norm_layers") or []) or "no normalization"
        return f"no BatchNorm2d ({norms}); prune says: {row.get('prune_error', row.get('error'))}"
    stage = row.get("stage")
    where = f" [{row['where']}]" if row.get("where") else ""
    return f"{stage}: {row.get('error')}{where}" if stage else f"{row.get('error')}{where}"


def markdown(rows: list[dict], header: dict) -> str:
    import torch
    import torch_pruning
    import torchvision

    flags = _cpu_flags()
    ok = sum(1 for r in rows if r.get("ok"))
    lines = [
        "# torchvision sweep: sparse steps → prune 30% → ONNX → parity",
        "",
        f"Command: `{header['command']}`  ",
        f"Date: {header['started']} (sweep wall time {header['wall_s'] / 60:.1f} min; per-network timeout "
        f"{header['timeout']:.0f} s, total cap {header['total_cap']:.0f} s)  ",
        *[f"Re-run later with `{u['command']}` on {u['started']}: {', '.join(u['names'])}  "
          for u in header.get("updates", [])],
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({_cpu_model()}), flags: {flags}; "
        "each network ran in its own `nice -n 10` subprocess with one torch thread, on a VM shared with "
        "other jobs (times are indicative only)  ",
        f"Versions: torch {torch.__version__}, torchvision {torchvision.__version__}, torch-pruning "
        f"{_dist_version('torch-pruning')} (its __version__ says {torch_pruning.__version__}), onnxruntime "
        f"{_dist_version('onnxruntime')}, onnx {_dist_version('onnx')}, Python {platform.python_version()}",
        "",
        f"Per network: `create_model('tv_' + name, num_classes=10, image_size=S)` at the smallest S of {list(SIZES)} "
        f"it runs at (torchvision's own stems at 64 px and more), {STEPS} SGD steps (batch {TRAIN_BATCH}, "
        f"random data) with the L1 subgradient λ={SPARSITY:g} on BN γ, BN statistics re-measured on 4 random "
        f"batches, `prune(model, {PERCENT}, x)` "
        "(min_keep 0.2), a forward of the pruned model, ONNX export (opset 17), and ONNX Runtime parity on "
        f"{PARITY_BATCH} random inputs (pass: max |Δlogit| ≤ 1e-3 and top-1 agreement ≥ 99.9%). "
        "MACs are Conv2d + Linear multiply-accumulates for one image at S px.",
        "",
        f"**{ok} of {len(rows)} networks pass.**",
        "",
        "| network | input | BN2d | params before → after | MACs before → after | channels kept | "
        "max \\|Δlogit\\| | max \\|logit\\| | top-1 agree | time | result | cause |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in sorted(rows, key=lambda r: r["name"]):
        kept = (f"{r['channels_after']}/{r['channels_before']}" if r.get("channels_before") else "")
        diff = f"{r['max_abs_diff']:.2e}" if r.get("max_abs_diff") is not None else ""
        agree = f"{100 * r['top1_agreement']:.1f}%" if r.get("top1_agreement") is not None else ""
        scale = f"{r['logit_scale']:.3g}" if r.get("logit_scale") is not None else ""
        size = f"{r['size']}" if r.get("size") else ""
        wall = f"{r['wall_s']:.0f} s" if r.get("wall_s") is not None else ""
        lines.append(f"| {r['name']} | {size} | {r.get('batchnorm2d', '')} | "
                     f"{_arrow(r.get('params_before'), r.get('params_after'))} | "
                     f"{_arrow(r.get('macs_before'), r.get('macs_after'))} | {kept} | {diff} | {scale} | {agree} | {wall} | "
                     f"{_reason(r).replace('|', '/')} | {_cause(r)} |")
    return "\n".join(lines) + "\n"


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def _cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no lscpu)"
    found = sorted(set(re.findall(r"\b(avx512_vnni|avx2|avx512f)\b", out)))
    return ", ".join(found) or "none of avx2/avx512f/avx512_vnni"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_report(path: Path, text: str) -> None:
    """Rewrite the measured part; keep the hand-written diagnosis after DIAGNOSIS_MARK."""
    from compress.atomic import atomic_path

    kept = ""
    if path.is_file():
        old = path.read_text()
        if DIAGNOSIS_MARK in old:
            kept = old[old.index(DIAGNOSIS_MARK):]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text + ("\n" + kept if kept else "\n" + DIAGNOSIS_MARK + "\n"))


def main(argv=None) -> int:
    from compress.models.tv import torchvision_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="NAME", help="run one network and print its row as JSON")
    parser.add_argument("--names", help="comma-separated subset (default: every name torchvision_names() lists)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per network (default 900)")
    parser.add_argument("--total-cap", type=float, default=3600.0, help="seconds for the whole sweep (default 3600)")
    parser.add_argument("--max-params", type=int, default=DEFAULT_MAX_PARAMS,
                        help=f"networks with more parameters are not run (default {DEFAULT_MAX_PARAMS:,})")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "torchvision_sweep.md")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "torchvision_sweep.json",
                        help="raw rows (default next to the table)")
    parser.add_argument("--update", action="store_true",
                        help="re-run only --names and merge them into the rows already in --json")
    parser.add_argument("--report-only", action="store_true", help="rewrite the table from --json; run nothing")
    parser.add_argument("--log-dir", type=Path, default=Path(tempfile.gettempdir()) / "torchvision_sweep_logs")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    if args.report_only:
        stored = json.loads(args.json.read_text())
        write_report(args.out, markdown(stored["rows"], stored["header"]))
        print(f"table rewritten from {args.json} into {args.out}")
        return 0
    known = torchvision_names()
    names = known if not args.names else [n.strip() for n in args.names.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"not in torchvision_names(): {', '.join(unknown)}")
    command = "python benchmarks/torchvision_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv)
    started = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.monotonic()
    rows = run_sweep(names, args.timeout, args.total_cap, args.max_params, args.log_dir)
    wall = time.monotonic() - t0
    header = {"command": command.strip(), "started": started, "wall_s": wall, "timeout": args.timeout,
              "total_cap": args.total_cap}
    if args.update and args.json.is_file():
        old = json.loads(args.json.read_text())
        fresh = {r["name"] for r in rows}
        rows = [r for r in old["rows"] if r["name"] not in fresh] + rows
        for r in rows:
            r.setdefault("run", old["header"]["started"])
        header = {**old["header"], "updates": old["header"].get("updates", []) + [
            {"command": command.strip(), "started": started, "names": sorted(fresh)}]}
    for r in rows:
        r.setdefault("run", started)
    from compress.atomic import write_json

    write_json(args.json, {"header": header, "rows": rows})
    write_report(args.out, markdown(rows, header))
    print(f"{sum(1 for r in rows if r.get('ok'))}/{len(rows)} pass; table in {args.out}; logs in {args.log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
