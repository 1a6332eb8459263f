"""Host memory of this process: current RSS (psutil, else /proc) and the process-wide peak (getrusage)."""

from __future__ import annotations

import os
import sys


def rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


class HostMemory:
    """Snapshots around a variant's load and run; deltas say what this variant added."""

    def __init__(self):
        self.marks: dict[str, int | None] = {}
        self.peaks: dict[str, int | None] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = rss = rss_bytes()
        peak = peak_rss_bytes()
        # Linux updates the high-water mark lazily (at unmaps and exits), so it can read below the RSS just
        # measured: a peak is at least every RSS and peak seen before it.
        seen = [v for v in (peak, rss, *self.peaks.values()) if v is not None]
        self.peaks[name] = max(seen) if seen else None

    def summary(self) -> dict:
        m, p = self.marks, self.peaks

        def delta(a, b, d):
            return None if d.get(a) is None or d.get(b) is None else d[b] - d[a]

        return {
            "rss_before_load_bytes": m.get("before_load"),
            "rss_after_load_bytes": m.get("after_load"),
            "rss_after_run_bytes": m.get("after_run"),
            "load_delta_bytes": delta("before_load", "after_load", m),
            "run_delta_bytes": delta("after_load", "after_run", m),
            "peak_rss_bytes": p.get("after_run") if p.get("after_run") is not None else p.get("after_load"),
            "peak_rss_growth_bytes": delta("before_load", "after_run", p),
            "note": "peak_rss is the process-wide high-water mark (getrusage); peak_rss_growth is how far "
                    "loading and running this variant raised it",
        }
