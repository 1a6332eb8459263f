"""Memory a new allocation can have: the one reading behind every memory bound, torch-free so that the
runtime's own checks (ONNX external data) use it as compress.limits does."""

from __future__ import annotations

import os

# Where a container's (or a batch job's) memory limit and use are read: cgroup v2, then v1.
CGROUP_MEMORY = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def cgroup_room() -> int | None:
    """What this process's cgroup still lets it allocate, or None without a limit. Inside a container
    MemAvailable is the host's figure: a bound taken from it would admit what the cgroup then kills."""
    for limit_file, usage_file in CGROUP_MEMORY:
        try:
            with open(limit_file) as fh:
                text = fh.read().strip()
            if text == "max":
                return None
            limit = int(text)
            with open(usage_file) as fh:
                used = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit >= 2**60:  # v1's "unlimited" is a huge page-aligned number
            return None
        return max(limit - used, 0)
    return None


def available_memory() -> int:
    """Bytes of memory available to a new allocation: MemAvailable from /proc/meminfo when readable, and
    no more than the cgroup's limit leaves."""
    room = cgroup_room()
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    return free if room is None else min(free, room)
    except (OSError, ValueError, IndexError):
        pass
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 2**40
    return total if room is None else min(total, room)
