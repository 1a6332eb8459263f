"""PNG plots of a slimming run: γ histograms per stage, kept channels per layer, training curves.

Functions over plain data (lists of numbers, plan and metrics dicts), drawn on matplotlib's Agg canvas
without touching the global pyplot backend. Each writes one PNG atomically and returns its path.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from compress.atomic import atomic_path
from compress.errors import CompressError
from compress.runtime.optional import pyplot_free_figure

# |γ| at or below this are drawn in the first bin: exact zeros from the proximal update included.
GAMMA_FLOOR = 1e-6


def _save(fig, canvas_cls, path: str | Path) -> Path:
    path = Path(path)
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def _values(v) -> list[float]:
    if hasattr(v, "detach"):
        v = v.detach().abs().flatten().cpu().tolist()
    return [abs(float(x)) for x in v]


def gamma_histogram(stages: Mapping[str, Sequence[float]], path: str | Path, *, threshold: float | None = None,
                    title: str = "BN scaling factors |γ|") -> Path:
    """The paper's Figure 4: one histogram of |γ| per stage (e.g. {"sparse": [...], "finetuned": [...]}),
    on a log-scale x axis; values at or under GAMMA_FLOOR (exact zeros) fall in the leftmost bin.
    A tensor or a list of tensors is accepted for each stage. `threshold` draws the pruning cut."""
    if not stages:
        raise CompressError("gamma_histogram needs at least one stage of γ values")
    data = {}
    for name, vals in stages.items():
        if isinstance(vals, (list, tuple)) and vals and hasattr(vals[0], "detach"):
            flat = [x for t in vals for x in _values(t)]
        else:
            flat = _values(vals)
        if not flat:
            raise CompressError(f"stage {name!r} has no γ values to plot")
        data[name] = [max(x, GAMMA_FLOOR) for x in flat]
    top = max(max(v) for v in data.values())
    hi = max(math.log10(top) + 0.1, math.log10(GAMMA_FLOOR) + 1)
    lo = math.log10(GAMMA_FLOOR)
    bins = [10 ** (lo + (hi - lo) * i / 60) for i in range(61)]
    Figure, Canvas = pyplot_free_figure()
    fig = Figure(figsize=(6.8, 1.0 + 1.9 * len(data)), layout="constrained")
    for i, (name, vals) in enumerate(data.items()):
        ax = fig.add_subplot(len(data), 1, i + 1)
        ax.hist(vals, bins=bins, color=f"C{i}")
        ax.set_xscale("log")
        zeros = sum(1 for x in vals if x <= GAMMA_FLOOR)
        under = sum(1 for x in vals if x < 1e-3)
        ax.set_title(f"{name}: {len(vals)} channels, {under / len(vals):.0%} under 1e-3"
                     + (f", {zeros} exactly ≤ {GAMMA_FLOOR:g}" if zeros else ""), fontsize="small")
        ax.set_ylabel("channels")
        if threshold is not None and threshold > 0:
            ax.axvline(max(threshold, GAMMA_FLOOR), color="k", linestyle="--", linewidth=1)
        ax.grid(True, alpha=0.3)
    ax.set_xlabel("|γ| (log scale)")
    fig.suptitle(title)
    return _save(fig, Canvas, path)


def kept_channels(layers: Sequence[str], before: Sequence[int], after: Sequence[int], path: str | Path, *,
                  title: str = "Channels per layer") -> Path:
    """Bars of each layer's channels before and after pruning, in network order."""
    if not (len(layers) == len(before) == len(after)) or not layers:
        raise CompressError("kept_channels needs equally long, non-empty layers, before and after")
    Figure, Canvas = pyplot_free_figure()
    fig = Figure(figsize=(max(6.0, 0.38 * len(layers) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(layers)))
    ax.bar(xs, before, color="0.8", label="before")
    ax.bar(xs, after, color="C0", width=0.6, label="kept")
    for x, b, a in zip(xs, before, after):
        ax.text(x, a, f"{a / b:.0%}" if b else "", ha="center", va="bottom", fontsize="xx-small")
    ax.set_xticks(xs)
    ax.set_xticklabels(layers, rotation=70, ha="right", fontsize="x-small")
    ax.set_ylabel("channels")
    ax.set_title(f"{title}: {sum(after)} of {sum(before)} kept")
    ax.legend(fontsize="small")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, Canvas, path)


def kept_channels_from_plan(plan: dict, path: str | Path) -> Path:
    """`kept_channels` over a compress.plan/1 dict (plan.json)."""
    try:
        groups = plan["groups"]
        layers = [g["root"] for g in groups]
        before = [int(g["channels_before"]) for g in groups]
        after = [int(g["channels_after"]) for g in groups]
    except (KeyError, TypeError, ValueError) as exc:
        raise CompressError(f"plan is malformed for plotting: missing or invalid {exc}") from None
    gone = 1 - sum(after) / sum(before) if sum(before) else 0.0
    budget = plan.get("budget") or {}
    asked = f", to {budget['target']} {budget['asked']:g}" if "target" in budget and "asked" in budget else ""
    return kept_channels(layers, before, after, path, title=f"Channels per layer: {gone:.0%} pruned{asked}")


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (a torn last line, from a kill mid-write, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def training_curves(stages: Mapping[str, Sequence[Mapping]], path: str | Path, *,
                    title: str = "Training") -> Path:
    """Test accuracy, training loss and the fraction of γ under 1e-3 per epoch, stages one after the
    other on a shared epoch axis (e.g. {"sparse": records, "finetuned": records} from metrics.jsonl)."""
    stages = {k: list(v) for k, v in stages.items() if v}
    if not stages:
        raise CompressError("training_curves needs at least one stage with metrics")
    Figure, Canvas = pyplot_free_figure()
    fig = Figure(figsize=(7.0, 7.0), layout="constrained")
    panels = [("test_accuracy", "test accuracy"), ("train_loss", "training loss"),
              ("gamma_under_1e-3", "γ under 1e-3")]
    axes = [fig.add_subplot(3, 1, i + 1) for i in range(3)]
    offset = 0
    for i, (name, records) in enumerate(stages.items()):
        xs = [offset + int(r.get("epoch", j + 1)) for j, r in enumerate(records)]
        for ax, (key, _label) in zip(axes, panels):
            pts = [(x, r[key]) for x, r in zip(xs, records) if r.get(key) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", color=f"C{i}", label=name)
        if offset:
            for ax in axes:
                ax.axvline(offset + 0.5, color="0.6", linewidth=0.8)
        offset = xs[-1]
    for ax, (_key, label) in zip(axes, panels):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    axes[0].set_title(title)
    axes[-1].set_xlabel("epoch (stages in sequence)")
    return _save(fig, Canvas, path)
