"""The paired pass of a benchmark (`--paired`): the artifacts measured on one backend, timed again all open at
once and in turns (compress.runtime.paired), with each one's time over the first's."""

from __future__ import annotations

from compress.runtime import paired as pairing
from compress.runtime.bench_input import benchmark_input
from compress.runtime.errors import one_line
from compress.runtime.runners import open_runner


def paired_pass(variants: list[dict], backend: str, settings, warnings: list, log) -> list[dict]:
    """The artifacts that ran on `backend`, timed again all open at once and in turns (compress.runtime.paired),
    per batch size at which the first of them and at least one other were measured. Whatever is asked and
    not compared is named in `warnings`."""
    on_backend = [v for v in variants if v["backend"] == backend]
    first = on_backend[0]
    if first["status"] == "failed" or first.get("nonfinite_outputs"):
        why = "failed" if first["status"] == "failed" else "outputs NaN or infinite values"
        warnings.append(f"paired comparison on {backend} not made: the first artifact, {first['name']}, {why}, "
                        "and every ratio is against it")
        return []
    broken = [v["name"] for v in on_backend if v.get("nonfinite_outputs")]
    if broken:
        warnings.append(f"paired comparison on {backend} leaves out {', '.join(broken)}: NaN or infinite outputs")
    group = [v for v in on_backend if v["status"] != "failed" and not v.get("nonfinite_outputs")]
    if len(group) < 2:
        warnings.append(f"paired comparison on {backend} not made: only {group[0]['name']} was measured")
        return []
    out = []
    runners: list = []
    try:
        for v in group:  # by position: two artifacts may share a name
            runners.append(open_runner(v["artifact"], backend, threads=settings.threads, device=settings.device,
                                       cuda_graph=settings.cuda_graph, performance_hint=settings.performance_hint,
                                       streams=settings.streams))
        for batch in settings.batches:
            measured = [i for i, v in enumerate(group)
                        if any(r["batch"] == batch and r["status"] == "ok" for r in v["latency"])]
            if len(measured) < 2 or measured[0] != 0:
                warnings.append(f"paired comparison on {backend} at batch {batch} not made: "
                                + ("the first artifact has no measurement there" if 0 not in measured
                                   else "no other artifact was measured there"))
                continue
            missing = [group[i]["name"] for i in range(len(group)) if i not in measured]
            if missing:
                warnings.append(f"paired comparison on {backend} at batch {batch} leaves out {', '.join(missing)}: "
                                "not measured there")
            log(f"paired, {backend} batch {batch}: {len(measured)} artifacts in turns, {settings.paired_blocks} blocks")
            keys = [str(i) for i in measured]
            chosen = {str(i): runners[i] for i in measured}
            inputs = {str(i): benchmark_input(runners[i], batch) for i in measured}
            samples, iters, block_s = pairing.interleave(chosen, inputs, settings.paired_blocks,
                                                         warmup=settings.warmup)
            found = pairing.ratios(samples, keys[0])
            rows = []
            for k, key in enumerate(keys):
                v = group[int(key)]
                row = {"name": v["name"], "artifact": v["artifact"], "status": v["status"], **found[key],
                       "verdict": pairing.verdict(found[key]) if k else "reference"}
                rows.append(row)
                if k:
                    lo, hi = row["ratio_ci95"]
                    log(f"  {row['name']}: ×{row['ratio_median']:.3f} of {rows[0]['name']} [{lo:.3f}–{hi:.3f}], "
                        f"{row['verdict']}")
            out.append({"backend": backend, "batch": batch, "reference": rows[0]["name"],
                        "blocks": settings.paired_blocks, "iters": iters, "block_s": block_s, "rows": rows})
    except Exception as exc:  # noqa: BLE001 - the paired pass is extra: its failure is named, the rows stand
        message = f"paired comparison on {backend} not completed: {one_line(exc)}"
        log(f"  warning: {message}")
        warnings.append(message)
    finally:
        for runner in runners:
            runner.close()
    return out
