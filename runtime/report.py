"""Benchmark reports: `report.json` (schema compress.report/1, the source of truth), `report.md`, PNG plots.

Ratios compare every variant with the first one given. Markdown and plots are rendered from the
JSON alone, so `load_report` + `write_report` re-renders an old run.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.runtime.atomic import check_writable_dir, write_files_into, write_problem
from compress.runtime.errors import InputFileError, ReportWriteError
from compress.runtime.strict_json import read_json

SCHEMA = "compress.report/1"
SCHEMA_FAMILY = "compress.report/"
SUPPORTED_MAJOR = 1
# A report of many variants with per-batch rows stays well under a few MB.
MAX_REPORT_BYTES = 64 * 1024**2


# --- building ------------------------------------------------------------------------------------

def build_report(variants: list[dict], settings: dict, system: dict, command: str | None = None) -> dict:
    warnings = [f"{v['name']}: {w}" if not w.startswith(v["name"]) else w for v in variants for w in v["warnings"]]
    warnings += other_inputs(variants)
    return {
        "schema": SCHEMA,
        "date": system.get("date"),
        "command": command,
        "settings": settings,
        "system": system,
        "variants": variants,
        "ratios": compute_ratios(variants),
        "fastest": fastest_runtimes(variants, settings.get("batches") or []),
        "paired": [],
        "warnings": warnings,
        "plots": [],
    }


def other_inputs(variants: list[dict]) -> list[str]:
    """Warnings for variants that take another input shape than the first: their speed-ups compare other work."""
    shapes = [(v["name"], v.get("input_shape")) for v in variants if v.get("input_shape")]
    if not shapes:
        return []
    first, shape = shapes[0]
    return [f"{name} takes {other} inputs and {first} {shape}: their ratios compare different work"
            for name, other in shapes[1:] if other != shape]


def _p50(variant: dict, batch: int, which: str = "end_to_end") -> float | None:
    for row in variant.get("latency") or []:
        if row.get("batch") == batch and row.get("status") == "ok" and row.get(which):
            return row[which]["p50_ms"]
    return None


def _compared_p50(variant: dict, batch: int) -> float | None:
    """The p50 that ratios and the fastest runtime use: none for a model whose outputs are NaN or infinite (its
    timings stay in its row, but a broken model is never the faster one)."""
    return None if variant.get("nonfinite_outputs") else _p50(variant, batch)


def _macs(model: dict):
    """A model's MACs, or None where some layers could not be sized (the count is only a lower bound)."""
    return None if model.get("uncounted") else model.get("macs")


def _macs_cell(model: dict) -> str:
    if model.get("uncounted") and model.get("macs") is not None:
        return f"≥ {model['macs']:,} ({len(model['uncounted'])} layers not counted)"
    return _fmt(model.get("macs"), ",")


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def compute_ratios(variants: list[dict]) -> list[dict]:
    """Each variant against the first: parameter, MAC and size ratios, accuracy change, p50 speed-up per batch."""
    if not variants:
        return []
    base = variants[0]
    bm, bf = base.get("model") or {}, base.get("file") or {}
    b_acc = (base.get("accuracy") or {}).get("accuracy")
    out = []
    for v in variants:
        m, f = v.get("model") or {}, v.get("file") or {}
        acc = (v.get("accuracy") or {}).get("accuracy")
        speedup = {}
        for row in v.get("latency") or []:
            b = row["batch"]
            speedup[str(b)] = _ratio(_compared_p50(base, b), _compared_p50(v, b))
        out.append({
            "name": v["name"], "vs": base["name"],
            "params_ratio": _ratio(m.get("params"), bm.get("params")),
            "macs_ratio": _ratio(_macs(m), _macs(bm)),
            "size_ratio": _ratio(f.get("size_bytes"), bf.get("size_bytes")),
            "accuracy_delta": None if acc is None or b_acc is None else acc - b_acc,
            "speedup_p50": speedup,
            "note": "speedup = first variant's p50 / this variant's p50 (end-to-end); >1 is faster",
        })
    return out


def fastest_runtimes(variants: list[dict], batches: list[int]) -> list[dict]:
    """Per artifact and batch size, the backend with the lowest p50, when the artifact ran on several."""
    groups: dict[str, list[dict]] = {}
    for v in variants:
        groups.setdefault(v.get("artifact_name") or v["name"], []).append(v)
    out = []
    for artifact, group in groups.items():
        if len({v.get("backend") for v in group}) < 2:
            continue
        for b in batches:
            timed = [(p, v) for v in group if (p := _compared_p50(v, b)) is not None]
            if not timed:
                continue
            best_p50, best = min(timed, key=lambda t: t[0])
            first = _compared_p50(group[0], b)
            out.append({"artifact": artifact, "batch": b, "backend": best.get("backend"), "ran_at": best.get("ran_at"),
                        "p50_ms": best_p50, "vs_first_backend": _ratio(first, best_p50),
                        "first_backend": group[0].get("backend")})
    return out


# --- validation and loading ----------------------------------------------------------------------

def validate_report(report: dict) -> dict:
    if not isinstance(report, dict):
        raise ValueError("a report is a JSON object")
    schema = report.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_FAMILY):
        raise ValueError(f"not a benchmark report (schema {schema!r}, expected {SCHEMA})")
    try:
        major = int(schema[len(SCHEMA_FAMILY):].split(".")[0])
    except ValueError:
        raise ValueError(f"unreadable report schema version {schema!r}") from None
    if major != SUPPORTED_MAJOR:
        raise ValueError(f"report schema {schema} is not supported; this toolkit reads {SCHEMA}")
    for key in ("variants", "settings", "system"):
        if key not in report:
            raise ValueError(f"report lacks {key!r}")
    if not isinstance(report["variants"], list):
        raise ValueError("report 'variants' must be a list")
    for i, v in enumerate(report["variants"]):
        if not isinstance(v, dict) or "name" not in v or v.get("status") not in ("ok", "partial", "failed"):
            raise ValueError(f"report variant {i} lacks a name or a status of ok/partial/failed")
    _check_types(report)
    try:  # everything a renderer reads, read once: a stranger's report fails here in one line, not later
        render_markdown(report)
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError, IndexError) as exc:
        raise ValueError(f"report is not laid out as this toolkit writes it ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None
    return report


_CONTAINERS = {"settings": dict, "system": dict, "ratios": list, "fastest": list, "paired": list,
               "warnings": list, "plots": list}
_VARIANT_FIELDS = {"latency": list, "model": dict, "file": dict, "accuracy": dict, "memory": dict, "power": dict,
                   "runner": dict, "warnings": list, "outputs": list}
_TIMING_FIELDS = ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "cv")


def _check_types(report: dict) -> None:
    """The containers and the measured numbers of a report have the types this toolkit writes."""
    for key, kind in _CONTAINERS.items():
        if report.get(key) is not None and not isinstance(report[key], kind):
            raise ValueError(f"report {key!r} must be a JSON {'object' if kind is dict else 'list'}")
    if any(not isinstance(w, str) for w in report.get("warnings") or []):
        raise ValueError("report 'warnings' must be a list of strings")
    for i, v in enumerate(report["variants"]):
        for key, kind in _VARIANT_FIELDS.items():
            if v.get(key) is not None and not isinstance(v[key], kind):
                raise ValueError(f"report variant {i} field {key!r} must be a JSON "
                                 f"{'object' if kind is dict else 'list'}")
        for row in v.get("latency") or []:
            batch = row.get("batch") if isinstance(row, dict) else None
            if not (isinstance(batch, int) and not isinstance(batch, bool) and batch > 0):
                raise ValueError(f"report variant {i}: a latency row without a positive integer batch")
            for which in ("end_to_end", "compute"):
                stats = row.get(which)
                if stats is None:
                    continue
                if not isinstance(stats, dict) or not all(_measured(stats.get(k)) for k in _TIMING_FIELDS):
                    raise ValueError(f"report variant {i} batch {batch}: {which} must hold finite, non-negative "
                                     f"numbers for {', '.join(_TIMING_FIELDS)}")


def _measured(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1e300


def load_report(path: str | Path) -> dict:
    """A report.json (or a directory holding one), checked for a supported schema version."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"report not found: {path}")
    try:
        report = read_json(path, max_bytes=MAX_REPORT_BYTES)
    except InputFileError as exc:
        raise ValueError(str(exc)) from None
    return validate_report(report)


# --- writing -------------------------------------------------------------------------------------

def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False, default=_json_default) + "\n"


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def check_report_dir(out_dir: str | Path) -> None:
    """Raise ReportWriteError in one line unless a report can be written into out_dir (before measuring)."""
    try:
        check_writable_dir(out_dir)
    except OSError as exc:
        raise ReportWriteError(f"cannot write the report into {out_dir}: {write_problem(exc, out_dir)}") from None


def write_report(report: dict, out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Write report.json, report.md and (with plots) PNGs into out_dir as one unit; returns their paths.

    Everything is rendered in memory and written in a hidden scratch directory first; only when every
    file is complete are they moved in, report.json last. A failure (disk full, a read-only directory)
    leaves out_dir as it was and raises ReportWriteError naming the problem in one line."""
    from compress.runtime.plots import PLOT_FILES

    out_dir = Path(out_dir)
    images: dict[str, bytes] = {}
    report["plots"] = []
    if plots:
        from compress.runtime.plots import render_plot_images

        try:
            images = render_plot_images(report)
        except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the numbers
            report.setdefault("warnings", []).append(f"plots not written: {exc}")
        report["plots"] = list(images)
    files = {**images, "report.md": render_markdown(report).encode(), "report.json": to_json(report).encode()}
    try:
        write_files_into(out_dir, files, marker="report.json", stale=PLOT_FILES.values())
    except OSError as exc:
        raise ReportWriteError(f"cannot write the report into {out_dir}: {write_problem(exc, out_dir)}") from None
    written = {key: out_dir / name for key, name in PLOT_FILES.items() if name in images}
    written.update(md=out_dir / "report.md", json=out_dir / "report.json")
    return written


# --- markdown ------------------------------------------------------------------------------------

def _fmt(value, spec: str = ".3f", empty: str = "—") -> str:
    if value is None:
        return empty
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _mib(n) -> str:
    return "—" if n is None else f"{n / 2**20:.2f} MiB"


def _cell(text) -> str:
    return _line(text).replace("|", "\\|")


def _line(text) -> str:
    """Text on one Markdown line: a file name may hold a line break."""
    return str(text).replace("\r", " ").replace("\n", " ")


def _summary_lines(report: dict) -> list[str]:
    s, sysinfo, variants = report.get("settings", {}), report.get("system", {}), report.get("variants", [])
    ratios = {r["name"]: r for r in report.get("ratios", [])}
    gpu = sysinfo.get("gpu") or {}
    jetson = sysinfo.get("jetson") or {}
    libs = sysinfo.get("libraries") or {}
    git = sysinfo.get("git") or {}
    lines = ["# Benchmark report", ""]
    lines += [f"- date: {report.get('date')}", f"- command: `{_line(report.get('command') or '(library call)')}`",
              f"- machine: {sysinfo.get('cpu_model')} ({sysinfo.get('cpu_count')} CPUs), {sysinfo.get('os')}"]
    cpu = sysinfo.get("cpu_features")
    if cpu:
        lines.append(f"- CPU features: VNNI {'yes' if cpu.get('vnni') else 'no'}, BF16 "
                     f"{'yes' if cpu.get('bf16') else 'no'} ({', '.join(cpu.get('flags') or []) or 'none read'})")
    if gpu:
        lines.append(f"- GPU: {gpu.get('name')} (compute capability {gpu.get('compute_capability', '?')}), "
                     f"driver {gpu.get('driver', '?')}")
    if jetson:
        clocks = jetson.get("clocks") or {}
        lines.append(f"- Jetson: {jetson.get('model')}, L4T {jetson.get('l4t')}, JetPack "
                     f"{jetson.get('jetpack') or (jetson.get('jetpack_major') or '?') + '.x'}, power mode "
                     f"{(jetson.get('nvpmodel') or {}).get('name', '?')}, clocks locked: CPU "
                     f"{clocks.get('cpu_locked')}, GPU {clocks.get('gpu_locked')}")
    lines.append("- libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v))
    if git:
        lines.append(f"- git: {git.get('commit')}{' (uncommitted changes)' if git.get('dirty') else ''}")
    budget = f"{s.get('iters')} iterations" if s.get("iters") else f"{s.get('duration_s')} s"
    lines += [f"- backend: {', '.join(s.get('backends') or [s.get('backend')])}; batches {s.get('batches')}; warm-up {s.get('warmup')}; {budget} "
              f"per batch; power source {s.get('power_source')}", ""]

    batches = s.get("batches") or []
    first_b = batches[0] if batches else None
    last_b = batches[-1] if batches else None
    lines += ["## Summary", "",
              "Ratios and speed-ups are against the first variant. MACs count Conv/Gemm/MatMul multiply-accumulates "
              "for one image; FLOPs = 2 × MACs.", ""]
    head = ["variant", "status", "precision (ran at)", "params", "MACs", "size", "accuracy",
            f"p50 @ b{first_b} (ms)", f"speed-up @ b{first_b}", f"img/s @ b{last_b}", "note"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        m = v.get("model") or {}
        acc = (v.get("accuracy") or {}).get("accuracy")
        p50 = _p50(v, first_b) if first_b is not None else None
        last_row = next((r for r in v.get("latency") or [] if r.get("batch") == last_b and r.get("status") == "ok"),
                        None)
        speed = (ratios.get(v["name"]) or {}).get("speedup_p50", {}).get(str(first_b))
        note = _failures(v)
        if not note and v.get("nonfinite_outputs"):
            note = "NaN/infinite outputs: the model is broken, no accuracy"
        if not note and v.get("warnings"):
            note = f"{len(v['warnings'])} warning(s)"
        lines.append("| " + " | ".join(_cell(c) for c in [
            v["name"], v["status"], _precision_cell(v),
            _fmt(m.get("params"), ","), _macs_cell(m), _mib((v.get("file") or {}).get("size_bytes")),
            "—" if acc is None else f"{acc:.2%}", _fmt(p50), "—" if speed is None else f"{speed:.2f}×",
            _fmt(last_row["throughput_img_s"], ".1f") if last_row else "—", note or ""]) + " |")
    lines.append("")
    lines += _runtime_lines(report)
    lines += _paired_lines(report)
    return lines


def _paired_lines(report: dict) -> list[str]:
    """The interleaved comparison (compress.runtime.paired), one table per backend and batch size."""
    sections = report.get("paired") or []
    if not sections:
        return []
    lines = ["## Paired comparison", "",
             "The artifacts timed again all loaded at once and in turns, in short blocks, so that a change in the "
             "machine's speed hits them alike. Ratio: each one's time over the first's in the same block, median "
             "over blocks, with a 95% interval of that median (order statistics); under 1 is faster.", ""]
    for sec in sections:
        lines += [f"{sec['backend']}, batch {sec['batch']}: {sec['blocks']} blocks of {sec['iters']} iterations "
                  f"per artifact ({_fmt(sec.get('block_s'), '.2f')} s a block), against {sec['reference']}", "",
                  "| artifact | median ms | × first | 95% interval | blocks 5–95% | verdict |", "|---|---|---|---|---|---|"]
        for row in sec["rows"]:
            lo, hi = row["ratio_ci95"]
            lines.append("| " + " | ".join(_cell(c) for c in [
                row["name"], _fmt(row["median_ms"]), _fmt(row["ratio_median"]), f"{_fmt(lo)}–{_fmt(hi)}",
                f"{_fmt(row['ratio_p05'])}–{_fmt(row['ratio_p95'])}",
                row["verdict"] + ("" if row.get("status", "ok") == "ok" else f" ({row['status']}: see its row)")])
                + " |")
        lines.append("")
    return lines


def _failures(v: dict) -> str:
    """Why a variant, or some of its batch sizes, has no figures: its load error, else each failed row's."""
    return v.get("error") or "; ".join(f"b{r.get('batch')}: {r.get('error')}" for r in v.get("latency") or []
                                       if r.get("status") == "failed")


def _precision_cell(v: dict) -> str:
    file_precision, ran_at = v.get("precision"), v.get("ran_at")
    if ran_at and ran_at != file_precision:
        return f"{file_precision or '?'} ({ran_at})"
    return file_precision or ran_at or "—"


def _runtime_lines(report: dict) -> list[str]:
    """Side by side, per artifact: each backend's p50 per batch with the precision it ran at; fastest in bold."""
    variants = report.get("variants", [])
    backends = list(dict.fromkeys(v.get("backend") for v in variants))
    if len(backends) < 2:
        return []
    batches = (report.get("settings") or {}).get("batches") or []
    fastest = {(f["artifact"], f["batch"]): f["backend"] for f in report.get("fastest") or []}
    lines = ["## Runtimes side by side", "",
             "p50 latency in ms (end-to-end) per batch size, each runtime at the precision shown; the fastest "
             "runtime per artifact and batch is in bold.", ""]
    head = ["artifact", "runtime", "ran at"] + [f"b{b} p50 (ms)" for b in batches]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in variants:
        artifact = v.get("artifact_name") or v["name"]
        cells = [artifact, v.get("backend") or "?", _precision_cell(v) if v["status"] != "failed" else "—"]
        for b in batches:
            p50 = _p50(v, b)
            text = _fmt(p50)
            if p50 is not None and fastest.get((artifact, b)) == v.get("backend"):
                text = f"**{text}**"
            cells.append(text)
        if v["status"] == "failed":
            cells[-1] = f"not measured: {_failures(v)}"
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")
    return lines


def render_summary(report: dict) -> str:
    """The header and the one-row-per-variant table (what the CLI prints)."""
    return "\n".join(_summary_lines(report))


def render_markdown(report: dict) -> str:
    lines = _summary_lines(report)
    variants = report.get("variants", [])
    ratios = {r["name"]: r for r in report.get("ratios", [])}
    for v in variants:
        lines += [f"## {_line(v['name'])}", "", f"- artifact: `{_line(v['artifact'])}` ({v['kind']}), backend "
                  f"{v['backend']}, status **{v['status']}**"]
        if v.get("error"):
            lines += [f"- error: {_line(v['error'])}", ""]
            continue
        runner = v.get("runner") or {}
        lines.append(f"- timer: {runner.get('timer')}; device {runner.get('device')}"
                     + (f"; providers {', '.join(runner['providers'])}" if runner.get("providers") else ""))
        r = ratios.get(v["name"]) or {}
        if v is not variants[0]:
            lines.append(f"- vs {r.get('vs')}: params ×{_fmt(r.get('params_ratio'))}, MACs ×{_fmt(r.get('macs_ratio'))}"
                         f", size ×{_fmt(r.get('size_ratio'))}, accuracy Δ "
                         f"{'—' if r.get('accuracy_delta') is None else format(r['accuracy_delta'], '+.2%')}")
        if v.get("reference_accuracy") is not None:
            lines.append(f"- accuracy recorded in model.json: {v['reference_accuracy']:.2%}")
        lines.append("")
        for which, title in (("end_to_end", "end-to-end (host → device → host)"), ("compute", "compute only")):
            rows = [row for row in v.get("latency") or [] if row.get(which) or row.get("status") == "failed"]
            if which == "compute" and not any(row.get("compute") for row in rows):
                continue
            lines += [f"Latency, {title}, ms:", "",
                      "| batch | status | mean | std | min | p50 | p90 | p95 | p99 | max | CV | img/s | iters |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for row in rows:
                st = row.get(which)
                if row.get("status") != "ok" or not st:
                    lines.append(f"| {row['batch']} | failed: {_cell(row.get('error'))} |" + " |" * 11)
                    continue
                tput = row["throughput_img_s"] if which == "end_to_end" else row.get("compute_throughput_img_s")
                lines.append("| " + " | ".join([str(row["batch"]), "ok"] + [_fmt(st[k]) for k in (
                    "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")]
                    + [f"{st['cv']:.1%}", _fmt(tput, ".1f"), str(row.get("iterations"))]) + " |")
            lines.append("")
        mem = v.get("memory") or {}
        host, gpu_mem = mem.get("host") or {}, mem.get("gpu") or {}
        if host or gpu_mem:
            lines += ["Memory:", ""]
            lines.append(f"- model file: {_mib((v.get('file') or {}).get('size_bytes'))}")
            if host:
                lines.append(f"- host RSS: {_mib(host.get('rss_before_load_bytes'))} before load, "
                             f"{_mib(host.get('rss_after_load_bytes'))} after load, "
                             f"{_mib(host.get('rss_after_run_bytes'))} after the run; process peak "
                             f"{_mib(host.get('peak_rss_bytes'))} (+{_mib(host.get('peak_rss_growth_bytes'))} "
                             "during this variant)")
            for key, value in gpu_mem.items():
                if key.endswith("_bytes") and value is not None:
                    lines.append(f"- GPU {key[:-6].replace('_', ' ')}: {_mib(value)}")
            lines.append("")
        power = v.get("power")
        if power:
            lines += [f"Power ({power.get('source')}: {power.get('rails')}):", "",
                      "| batch | samples | average W | energy / image (mJ) | GPU util % |", "|---|---|---|---|---|"]
            for b, w in (power.get("per_batch") or {}).items():
                lines.append(f"| {b} | {w.get('samples')} | {_fmt(w.get('avg_power_w'), '.2f')} | "
                             f"{_fmt(w.get('energy_per_image_mj'), '.3f')} | {_fmt(w.get('gpu_util_avg_pct'), '.0f')} |")
            lines.append("")
    if report.get("plots"):
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]] + [""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {_cell(w)}" for w in report["warnings"]] + [""]
    return "\n".join(lines)
