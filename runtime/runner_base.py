"""The interface every backend implements: load an artifact, prepare a batch size, infer, time iterations.

Backends subclass `Runner` (they import this module; it imports none of them). A runner measures two
latencies per iteration where the device makes them differ: end-to-end (host input → device → host
output) and compute-only (inputs already on the device). On a CPU they are the same measurement and
`compute_ms` is None.

A model may return several outputs (a detector's boxes and scores): `infer_all` gives every output in
the model's order, `infer` the only one of a single-output model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from compress.runtime.errors import ArtifactError

# Fewest timed iterations in --duration mode, so a spread can always be computed.
MIN_ITERS = 2
# Most timed iterations of one batch size (--iters' bound; --duration stops there too, so that the samples
# it keeps stay bounded).
MAX_ITERS = 1_000_000


@dataclass
class Timings:
    """Per-iteration latencies of one batch size, in milliseconds."""

    end_to_end_ms: list[float]
    compute_ms: list[float] | None
    elapsed_s: float
    batch: int
    iterations: int = field(init=False)

    def __post_init__(self):
        self.iterations = len(self.end_to_end_ms)


class Runner:
    """Base class. Subclasses set the attributes below and implement `_prepare`, `_infer` and `_step`."""

    backend = "?"
    device = "cpu"
    timer = "time.perf_counter"
    compute_timing: str | None = None
    # Inferences of the whole batch that one timed step makes (a step that times end to end and then
    # compute only runs the model twice): the power window's energy is shared over all of them.
    inferences_per_step = 1

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata: dict = {}
        self.input_shape: tuple[int, ...] | None = None  # per sample, e.g. (3, 32, 32)
        self.output_names: list[str] = []  # in the model's order (a torch model's are known after a run)
        self.fixed_batch: int | None = None  # a static batch dimension
        self.min_batch = 1
        self.max_batch: int | None = None  # largest batch a dynamic profile allows (None: unbounded)
        self.prepared_batch: int | None = None

    def caveats(self, batch: int) -> list[str]:
        """What a reader of batch `batch`'s figures should know about how they were taken (none here)."""
        return []

    # --- what subclasses implement ---------------------------------------------------------------

    def _prepare(self, batch: int) -> None:
        """Allocate and bind whatever a batch of this size needs."""

    def _infer(self, x: np.ndarray) -> Sequence[np.ndarray]:
        """Every output of the model on batch x, in the model's output order."""
        raise NotImplementedError

    def _step(self, x: np.ndarray) -> Callable[[], tuple[float, float | None]]:
        """A callable running one timed iteration on x: returns (end_to_end_ms, compute_ms or None)."""
        raise NotImplementedError

    @property
    def ran_at(self) -> str | None:
        """The precision the backend computed in; by default the artifact's own (its metadata)."""
        return self.metadata.get("precision")

    def info(self) -> dict:
        return {"backend": self.backend, "device": self.device, "timer": self.timer,
                "compute_timing": self.compute_timing}

    def gpu_memory(self) -> dict | None:
        return None

    def close(self) -> None:
        pass

    # --- shared behaviour ------------------------------------------------------------------------

    def check_batch(self, batch: int) -> None:
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        if self.fixed_batch is not None and batch != self.fixed_batch:
            raise ValueError(f"{self.path.name} has a static batch of {self.fixed_batch}; batch {batch} needs "
                             "an artifact exported with a dynamic batch")
        if batch < self.min_batch or (self.max_batch is not None and batch > self.max_batch):
            raise ValueError(f"batch {batch} is outside {self.path.name}'s optimization profile "
                             f"{self.min_batch}..{self.max_batch}; rebuild the engine with a wider --batch profile")

    def prepare(self, batch: int) -> None:
        if batch != self.prepared_batch:
            self.check_batch(batch)
            self._prepare(batch)
            self.prepared_batch = batch

    def output_name(self, k: int) -> str:
        return self.output_names[k] if k < len(self.output_names) else f"#{k}"

    def infer_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output for any number of normalized float32 images, in chunks the artifact accepts."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            return []
        chunk = self.fixed_batch or self.max_batch or len(x)
        parts: list[list[np.ndarray]] = []
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk]
            n = len(part)
            smallest = self.fixed_batch or self.min_batch
            if n < smallest:
                # A static batch (or a profile's minimum) is filled with copies of the last image;
                # the padding's outputs are dropped.
                part = np.concatenate([part, np.repeat(part[-1:], smallest - n, axis=0)])
            self.prepare(len(part))
            outs = [np.asarray(o) for o in self._infer(part)]
            self.check_output_batch(outs, len(part))
            if len(part) != len(x):  # padded or chunked: every output must have the batch first to be cut
                for k, o in enumerate(outs):
                    if o.ndim == 0 or o.shape[0] != len(part):
                        raise ArtifactError(f"{self.path.name}: output {self.output_name(k)} has shape "
                                            f"{list(o.shape)}, without the batch of {len(part)} first; it cannot "
                                            "be split into batches")
                outs = [o[:n] for o in outs]
            parts.append(outs)
        if len(parts) <= 1:
            return parts[0] if parts else []
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def output_batch_problem(self, outs: Sequence[np.ndarray], batch: int) -> str | None:
        """Why outputs for a batch of several images look like one answer for the whole batch: no output
        has the batch first. None when one has, or for a batch of one."""
        if batch > 1 and outs and not any(o.ndim and o.shape[0] == batch for o in outs):
            shapes = ", ".join(f"{self.output_name(k)} {list(o.shape)}" for k, o in enumerate(outs))
            return f"{self.path.name}: no output has the batch of {batch} first ({shapes[:300]})"
        return None

    @property
    def promises_batch_first(self) -> bool:
        """Files this toolkit wrote give every output the batch first (docs/ARTIFACTS.md); other tools' may
        flatten a batch's detections into rows that carry their image index."""
        return "toolkit_version" in (self.metadata or {})

    def check_output_batch(self, outs: Sequence[np.ndarray], batch: int) -> None:
        """Refuse, for a file that promises the batch first, outputs that look like one answer for the batch:
        it would be timed as if it computed every image."""
        problem = self.output_batch_problem(outs, batch)
        if problem and self.promises_batch_first:
            raise ArtifactError(f"{problem}; the model does not compute one answer per image")

    def infer(self, x: np.ndarray) -> np.ndarray:
        """The output of a single-output model (logits) for any number of normalized float32 images."""
        outs = self.infer_all(x)
        if not outs:
            return np.zeros((0,), np.float32)
        if len(outs) != 1:
            names = ", ".join(self.output_name(k) for k in range(len(outs)))
            raise ArtifactError(f"{self.path.name} returns {len(outs)} outputs ({names}); infer_all gives them all")
        return outs[0]

    def measure(self, x: np.ndarray, *, warmup: int = 10, iters: int | None = None,
                duration_s: float | None = None) -> Timings:
        """Warm up, then time `iters` iterations (default 100), or as many as fit in `duration_s` (at most
        MAX_ITERS, so that the samples kept stay bounded), on batch x."""
        if iters is not None and duration_s is not None:
            raise ValueError("give exactly one of iters and duration_s")
        if iters is None and duration_s is None:
            iters = 100
        if iters is not None and iters < MIN_ITERS:
            raise ValueError(f"iters must be at least {MIN_ITERS} to report a spread, got {iters}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        batch = len(x)
        self.prepare(batch)
        step = self._step(x)
        for _ in range(warmup):
            step()
        e2e: list[float] = []
        comp: list[float] = []
        append_e, append_c = e2e.append, comp.append
        clock = time.perf_counter
        t0 = clock()
        if iters is not None:
            for _ in range(iters):
                a, b = step()
                append_e(a)
                append_c(b)
        else:
            deadline = t0 + float(duration_s)
            while len(e2e) < MIN_ITERS or (clock() < deadline and len(e2e) < MAX_ITERS):
                a, b = step()
                append_e(a)
                append_c(b)
        elapsed = clock() - t0
        compute = None if all(c is None for c in comp) else [float(c) for c in comp]
        return Timings(e2e, compute, elapsed, batch)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
