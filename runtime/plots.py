"""PNG plots of a report, drawn with matplotlib's Agg canvas (no display, global backend untouched)."""

from __future__ import annotations

import io

from compress.runtime.optional import pyplot_free_figure

# plot key -> file name in a report directory
PLOT_FILES = {"latency": "latency_vs_batch.png", "accuracy": "accuracy_vs_latency.png",
              "widths": "channel_widths.png"}


def _ok_rows(v: dict, which: str = "end_to_end") -> list[dict]:
    return [r for r in v.get("latency") or [] if r.get("status") == "ok" and r.get(which)]


def _png(fig, canvas_cls) -> bytes:
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def latency_vs_batch(report: dict) -> bytes | None:
    variants = [v for v in report.get("variants", []) if _ok_rows(v)]
    if not variants:
        return None
    Figure, Canvas = pyplot_free_figure()
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for v in variants:
        rows = sorted(_ok_rows(v), key=lambda r: r["batch"])
        xs = [r["batch"] for r in rows]
        p50 = [r["end_to_end"]["p50_ms"] for r in rows]
        lo = [r["end_to_end"]["p50_ms"] - r["end_to_end"]["min_ms"] for r in rows]
        hi = [r["end_to_end"]["p95_ms"] - r["end_to_end"]["p50_ms"] for r in rows]
        ax.errorbar(xs, p50, yerr=[lo, hi], marker="o", capsize=3, label=v["name"])
    ax.set_xscale("log", base=2)
    batches = sorted({r["batch"] for v in variants for r in _ok_rows(v)})
    ax.set_xticks(batches)
    ax.set_xticklabels([str(b) for b in batches])
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch size")
    ax.set_ylabel("end-to-end latency, ms (p50; bars: min to p95)")
    ax.set_title(f"Latency vs batch size ({report.get('settings', {}).get('backend')})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig, Canvas)


def accuracy_vs_latency(report: dict) -> bytes | None:
    points = []
    for v in report.get("variants", []):
        acc = (v.get("accuracy") or {}).get("accuracy")
        rows = sorted(_ok_rows(v), key=lambda r: r["batch"])
        if acc is not None and rows:
            points.append((v["name"], rows[0]["end_to_end"]["p50_ms"], acc, rows[0]["batch"]))
    if not points:
        return None
    Figure, Canvas = pyplot_free_figure()
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for name, lat, acc, batch in points:
        ax.scatter([lat], [acc * 100])
        ax.annotate(f"{name} (b{batch})", (lat, acc * 100), textcoords="offset points", xytext=(4, 4),
                    fontsize="small")
    ax.set_xlabel("end-to-end latency p50, ms (smallest batch measured)")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title("Accuracy vs latency")
    ax.grid(True, alpha=0.3)
    return _png(fig, Canvas)


def channel_widths(report: dict) -> bytes | None:
    variants = [v for v in report.get("variants", []) if v.get("widths")]
    if not variants:
        return None
    Figure, Canvas = pyplot_free_figure()
    fig = Figure(figsize=(max(6.4, 0.25 * max(len(v["widths"]) for v in variants)), 4.2))
    ax = fig.add_subplot(1, 1, 1)
    base = variants[0]["widths"]
    layers = list(base)
    for v in variants[1:]:
        layers += [layer for layer in v["widths"] if layer not in base and layer not in layers]
    xs = list(range(len(layers)))
    for i, v in enumerate(variants):
        ys = [v["widths"].get(layer, float("nan")) for layer in layers]
        ax.step(xs, ys, where="mid", label=v["name"], linewidth=2 if i == 0 else 1.5,
                linestyle="--" if i == 0 and len(variants) > 1 else "-")
    ax.set_xticks(xs)
    ax.set_xticklabels(layers, rotation=90, fontsize="x-small")
    ax.set_ylabel("output channels / features")
    ax.set_title("Per-layer widths" + (f" (dashed: {variants[0]['name']})" if len(variants) > 1 else ""))
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig, Canvas)


def render_plot_images(report: dict) -> dict[str, bytes]:
    """{file name: PNG bytes} of the plots this report has data for (written by report.write_report)."""
    made = {}
    for key, fn in (("latency", latency_vs_batch), ("accuracy", accuracy_vs_latency), ("widths", channel_widths)):
        png = fn(report)
        if png is not None:
            made[PLOT_FILES[key]] = png
    return made
