"""Latency, throughput, peak memory and energy of one network at one precision, mode and batch size.

Each iteration is timed as the runtime harness's torch runner times it: CUDA events around the copy of a
pinned float32 batch to the device (and its cast to the network's precision), the forward pass, and the
copy of the logits back; end-to-end is the whole, compute the forward pass alone. Modes: eager, torch.compile
(batch dimension dynamic, so batch 32 reuses batch 256's graph; batch 1 gets its own), and CUDA graphs (the
forward pass captured once per batch size, replayed). Energy: NVML's total-energy counter (mJ, whole board)
over the timed loop, whose ends are moved to the counter's own updates: it advances only every few tens of
milliseconds, so read at arbitrary moments it would be off by up to one update period at each end (±10–20%
of a 0.5 s loop). An update is seen when the iteration in flight ends, so each end is still off by up to one
iteration: small against the period at batch 1 and 32, not for the slowest batch-256 networks. Where a GPU
has no such counter or it does not move, no energy is reported and the row's warnings say why. On a CPU
the same code times with the wall clock and reads no power.
"""

from __future__ import annotations

import time

import numpy as np
import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Energy:
    """NVML's total energy counter (mJ) of GPU 0, or None where unavailable."""

    def __init__(self):
        self.handle = self.nvml = None
        self.why = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            self.nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - no NVML, no GPU, or no counter: power is then not reported
            self.why = f"NVML energy counter unavailable: {type(exc).__name__}: {exc}"
            self.handle = None

    def read_mj(self) -> float | None:
        return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) if self.handle else None


class Timer:
    """Per-iteration (end-to-end ms, compute ms) on CUDA events, or the wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)] if self.cuda else None

    def run(self, upload, forward, download) -> tuple[float, float]:
        if not self.cuda:
            t0 = time.perf_counter()
            upload()
            t1 = time.perf_counter()
            out = forward()
            t2 = time.perf_counter()
            download(out)
            t3 = time.perf_counter()
            return (t3 - t0) * 1e3, (t2 - t1) * 1e3
        e0, e1, e2, e3 = self.events
        e0.record()
        upload()
        e1.record()
        out = forward()
        e2.record()
        download(out)
        e3.record()
        e3.synchronize()
        return e0.elapsed_time(e3), e1.elapsed_time(e2)


def _buffers(batch: int, shape, precision: str, device: torch.device, mean, std):
    """A pinned float32 host batch (seeded uint8 pixels, normalized like the harness's input) and device buffers."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(batch, *shape), dtype=np.uint8)
    mean_a = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std_a = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    host = torch.from_numpy(((pixels.astype(np.float32) / 255.0 - mean_a) / std_a).astype(np.float32))
    if device.type == "cuda":
        host = host.pin_memory()
    staged = torch.empty(host.shape, dtype=torch.float32, device=device)
    static = torch.empty(host.shape, dtype=DTYPES[precision], device=device).contiguous(memory_format=torch.channels_last)
    return host, staged, static


def forward_fn(model, static, mode: str, device: torch.device):
    """The forward pass as a callable for this mode (for cudagraph: captured here, replayed by the callable)."""
    if mode != "cudagraph":
        return lambda: model(static)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            model(static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(static)

    def replay():
        graph.replay()
        return out
    return replay


TICK_WAIT_S = 0.3  # longer than NVML's energy update period (20-100 ms on recent boards)


def until_tick(energy: Energy, run_once, limit_s: float = TICK_WAIT_S) -> tuple[float | None, float]:
    """Call run_once() until the energy counter moves: (its new value, the time it was seen), or (None, time)."""
    first = energy.read_mj()
    t0 = time.perf_counter()
    while True:
        run_once()
        value, now = energy.read_mj(), time.perf_counter()
        if value > first:  # a counter reset (driver reload) is not an update
            return value, now
        if now - t0 > limit_s:
            return None, now


def measure(model, batch: int, precision: str, mode: str, spec: dict, energy: Energy | None) -> dict:
    """One latency row in the harness's format (compress.report/1), plus peak memory, energy and compile time."""
    from compress.runtime.stats import summarize, throughput

    device = spec["device"]
    host, staged, static = _buffers(batch, spec["input_shape"], precision, device, spec["mean"], spec["std"])
    if mode == "compile" and batch > 1:
        torch._dynamo.mark_dynamic(static, 0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    row = {"batch": batch, "status": "ok", "error": None, "warnings": []}
    with torch.inference_mode():
        t0 = time.perf_counter()
        fwd = forward_fn(model, static, mode, device)
        fwd()  # compiles (torch.compile) or warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if mode == "compile":
            row["compile_s"] = round(time.perf_counter() - t0, 2)

        def upload():
            staged.copy_(host, non_blocking=True)
            static.copy_(staged)

        timer = Timer(device)

        def run():
            return timer.run(upload, fwd, lambda out: out.float().cpu())

        for _ in range(spec["warmup"]):
            run()
        e2e, comp = [], []

        def once():
            a, b = run()
            e2e.append(a)
            comp.append(b)

        e_start = e_end = None
        counter = energy is not None and energy.handle is not None
        if counter:  # start on an update of the counter: the runs before it are warm-up
            e_start, t_start = until_tick(energy, run)
        if e_start is None:
            t_start = time.perf_counter()
        while len(e2e) < spec["min_iters"] or time.perf_counter() - t_start < spec["seconds"]:
            once()
        elapsed = time.perf_counter() - t_start
        if e_start is not None:  # and end on one: these runs are timed too
            e_end, t_end = until_tick(energy, once)
            elapsed = t_end - t_start
        if counter and (e_start is None or e_end is None):
            row["warnings"].append(f"NVML energy counter did not move within {TICK_WAIT_S} s: no energy reported")
    s_e2e, s_comp = summarize(e2e), summarize(comp)
    row.update(iterations=len(e2e), elapsed_s=elapsed, end_to_end=s_e2e, compute=s_comp,
               throughput_img_s=throughput(batch, s_e2e), compute_throughput_img_s=throughput(batch, s_comp))
    if device.type == "cuda":
        row["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    if e_start is not None and e_end is not None and e_end > e_start:
        joules = (e_end - e_start) / 1000.0
        row["power"] = {"source": "nvml energy counter", "samples": 2, "avg_power_w": joules / elapsed,
                        "energy_per_image_mj": (e_end - e_start) / (len(e2e) * batch)}
    return row
