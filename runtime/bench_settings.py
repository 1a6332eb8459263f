"""What a benchmark run is asked to do, checked and bounded before anything is loaded or allocated.

Every count here may come from a command line or a script someone else wrote: a thread count of a
million, a batch of 2**40 or a billion iterations would hang the machine or exhaust its memory before
any measurement, so each has a bound, named in the one-line error that refuses it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from compress.runtime.backends import get_backend
from compress.runtime.paired import MAX_BLOCKS as MAX_PAIRED_BLOCKS
from compress.runtime.paired import MIN_BLOCKS as MIN_PAIRED_BLOCKS
from compress.runtime.runner_base import MAX_ITERS

MAX_THREADS = 1024  # intra-op threads (ONNX Runtime) / INFERENCE_NUM_THREADS (OpenVINO)
MAX_STREAMS = 1024  # OpenVINO NUM_STREAMS
MAX_DEVICE_INDEX = 255  # CUDA device ordinal
MAX_BATCH = 65536
MAX_BATCH_SIZES = 64  # how many batch sizes one run measures
MAX_WARMUP = 100_000
MAX_DURATION_S = 24 * 3600.0  # per batch size
POWER_INTERVAL_MS = (1, 60_000)
POWERS = ("auto", "tegrastats", "nvml", "none")
HINTS = ("LATENCY", "THROUGHPUT")


def _int_in(name: str, value, low: int, high: int, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}{what}, got {value}")
    return int(value)


@dataclass
class BenchSettings:
    backend: str = "ort-cpu"
    batches: tuple[int, ...] = (1, 8, 32)
    warmup: int = 10
    iters: int | None = 100
    duration_s: float | None = None
    power: str = "auto"  # auto, tegrastats, nvml or none
    power_interval_ms: int = 100
    cuda_graph: bool = False
    threads: int | None = None
    device: int = 0
    accuracy_batch: int = 250
    performance_hint: str = "LATENCY"  # OpenVINO: LATENCY or THROUGHPUT
    streams: int | None = None  # OpenVINO: NUM_STREAMS (default: what the hint picks)
    paired_blocks: int = 0  # > 0: also time the artifacts in turns (compress.runtime.paired), this many blocks

    def __post_init__(self):
        get_backend(self.backend)  # ValueError naming the choices
        if self.performance_hint not in HINTS:
            raise ValueError(f"performance hint must be LATENCY or THROUGHPUT, got {self.performance_hint!r}")
        self._check_batches()
        if (self.iters is None) == (self.duration_s is None):
            raise ValueError("give exactly one of iters and duration_s")
        if self.iters is not None:
            if isinstance(self.iters, numbers.Integral) and not isinstance(self.iters, bool) and self.iters < 2:
                raise ValueError(f"iters must be at least 2 to report a spread, got {self.iters}")
            self.iters = _int_in("iters", self.iters, 2, MAX_ITERS)
        if self.duration_s is not None:
            d = self.duration_s
            if isinstance(d, bool) or not isinstance(d, numbers.Real) or not math.isfinite(d) or d <= 0:
                raise ValueError(f"duration must be positive and finite, got {d}")
            if d > MAX_DURATION_S:
                raise ValueError(f"duration must be at most {MAX_DURATION_S:.0f} s per batch size, got {d}")
        if isinstance(self.warmup, numbers.Integral) and not isinstance(self.warmup, bool) and self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        self.warmup = _int_in("warmup", self.warmup, 0, MAX_WARMUP)
        if self.power not in POWERS:
            raise ValueError(f"power must be auto, tegrastats, nvml or none, got {self.power!r}")
        self.power_interval_ms = _int_in("power interval (ms)", self.power_interval_ms, *POWER_INTERVAL_MS)
        if self.threads is not None:
            self.threads = _int_in("threads", self.threads, 1, MAX_THREADS, " (the bound on inference threads)")
        if self.streams is not None:
            self.streams = _int_in("streams", self.streams, 1, MAX_STREAMS, " (the bound on OpenVINO streams)")
        self.device = _int_in("device", self.device, 0, MAX_DEVICE_INDEX, " (a CUDA device index)")
        self.accuracy_batch = _int_in("accuracy batch", self.accuracy_batch, 1, MAX_BATCH)
        self.paired_blocks = _int_in("paired blocks", self.paired_blocks, 0, MAX_PAIRED_BLOCKS)
        if 0 < self.paired_blocks < MIN_PAIRED_BLOCKS:
            raise ValueError(f"paired blocks must be 0 (none) or at least {MIN_PAIRED_BLOCKS}, the fewest that give "
                             f"a 95% interval of the median, got {self.paired_blocks}")

    def _check_batches(self) -> None:
        batches = tuple(self.batches)
        if not batches or any(isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1 for b in batches):
            raise ValueError(f"batch sizes must be positive integers, got {list(batches)}")
        if len(batches) > MAX_BATCH_SIZES:
            raise ValueError(f"at most {MAX_BATCH_SIZES} batch sizes per run, got {len(batches)}")
        for b in batches:
            _int_in("batch size", b, 1, MAX_BATCH)
        twice = next((b for i, b in enumerate(batches) if b in batches[:i]), None)
        if twice is not None:
            raise ValueError(f"batch size {twice} is given twice")
        self.batches = tuple(int(b) for b in batches)
