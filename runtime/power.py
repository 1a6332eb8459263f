"""Power sampled in a background thread while a benchmark runs, and energy per image from it.

Jetson: `tegrastats --interval N` (board/module rails). Desktop GPUs: NVML, whole GPU board, of the GPU
that CUDA runs on (compress.runtime.nvml.cuda_device_handle): the total-energy counter's difference over
the window where the board has one, else the power readings (`nvmlDeviceGetPowerUsage`, milliwatts)
taken at least a second into it. Each sample is (time.perf_counter(), milliwatts); a measurement window
is summarised by the samples that fall inside it.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

from compress.runtime.jetson import board_power_mw, parse_tegrastats_line


class PowerSampler:
    """Start/stop a sampler; `window(t0, t1)` averages the samples taken between t0 and t1."""

    source = "none"

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.extra: list[tuple[float, dict]] = []
        self.rails = ""
        self.error: str | None = None
        self._lock = threading.Lock()

    def start(self) -> "PowerSampler":
        return self

    def stop(self) -> None:
        pass

    def _add(self, t: float, mw: float | None, extra: dict | None = None) -> None:
        with self._lock:
            if mw is not None:
                self.samples.append((t, mw))
            if extra is not None:
                self.extra.append((t, extra))

    def window(self, t0: float, t1: float) -> dict:
        with self._lock:
            inside = [mw for t, mw in self.samples if t0 <= t <= t1]
            util = [e.get("gpu_util_pct") for t, e in self.extra if t0 <= t <= t1
                    and e.get("gpu_util_pct") is not None]
            ram = [e.get("ram_used_mb") for t, e in self.extra if t0 <= t <= t1 and e.get("ram_used_mb") is not None]
            rails: dict[str, list[float]] = {}
            for t, e in self.extra:
                if t0 <= t <= t1:
                    for name, mw in (e.get("rails_mw") or {}).items():
                        rails.setdefault(name, []).append(mw)
        out = {"source": self.source, "rails": self.rails, "samples": len(inside),
               "avg_power_w": sum(inside) / len(inside) / 1000.0 if inside else None}
        if util:
            out["gpu_util_avg_pct"] = sum(util) / len(util)
        if ram:
            out["ram_used_max_mb"] = max(ram)
        if rails:
            out["rails_avg_w"] = {name: sum(v) / len(v) / 1000.0 for name, v in sorted(rails.items())}
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def energy_per_image_mj(avg_power_w: float | None, elapsed_s: float, images: int) -> float | None:
    """Average power x time / images, in millijoules (the whole board's power, idle share included)."""
    if avg_power_w is None or images <= 0:
        return None
    return avg_power_w * elapsed_s / images * 1000.0


class TegrastatsSampler(PowerSampler):
    source = "tegrastats"

    def __init__(self, interval_ms: int = 100, exe: str | None = None):
        super().__init__()
        self.interval_ms = int(interval_ms)
        self.exe = exe or shutil.which("tegrastats")
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self.lines = 0

    def start(self) -> "TegrastatsSampler":
        if self.exe is None:
            self.error = "tegrastats not found on PATH"
            return self
        try:
            self._proc = subprocess.Popen([self.exe, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True, bufsize=1)
        except OSError as exc:
            self.error = f"cannot start tegrastats: {exc}"
            return self
        self._thread = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.feed(line, time.perf_counter())

    def feed(self, line: str, t: float) -> None:
        """Parse one tegrastats line taken at time t (also the entry point for tests and logs)."""
        parsed = parse_tegrastats_line(line)
        mw, rails = board_power_mw(parsed["rails_mw"])
        if mw is not None:
            self.rails = rails
        self.lines += 1
        self._add(t, mw, {"gpu_util_pct": parsed["gpu_util_pct"], "ram_used_mb": parsed["ram_used_mb"],
                          "rails_mw": parsed["rails_mw"]})

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.lines and not self.samples:
            self.error = "tegrastats printed no power rails (some need root: run with sudo, or set --no-power)"


# NVML's power reading is the mean of the last second on Ampere (except GA100) and newer GPUs, so a
# reading taken less than this after a window opens still holds power drawn before it.
READING_AVERAGES_S = 1.0
# The total-energy counter (Volta and newer) gives a window's energy as a difference; it moves every
# 20-100 ms, so over at least this span its error is a few percent.
COUNTER_SPAN_S = 1.0


class NvmlSampler(PowerSampler):
    """The GPU board's power while a loop runs. A window's average comes from NVML's total-energy counter
    where the board has one (its difference over the window, between the first and last polls that saw it
    move), else from the power readings taken at least `READING_AVERAGES_S` into the window."""

    source = "nvml"

    def __init__(self, device_index: int = 0, interval_ms: int = 50):
        super().__init__()
        self.device_index = device_index
        self.interval_s = interval_ms / 1000.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rails = "nvmlDeviceGetPowerUsage (GPU board)"
        self.counter = False

    def start(self) -> "NvmlSampler":
        from compress.runtime.nvml import cuda_device_handle
        from compress.runtime.optional import pynvml

        nvml = pynvml()
        try:
            nvml.nvmlInit()
            handle = cuda_device_handle(nvml, self.device_index)
            nvml.nvmlDeviceGetPowerUsage(handle)
        except Exception as exc:  # noqa: BLE001 - NVMLError subclasses per code, or an unknown device mapping
            self.error = f"NVML power reading unavailable: {exc}"
            return self
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.counter = True
        except Exception:  # noqa: BLE001 - boards before Volta have no counter
            self.counter = False
        self._thread = threading.Thread(target=self._poll, args=(nvml, handle), name="nvml-power", daemon=True)
        self._thread.start()
        return self

    def _poll(self, nvml, handle) -> None:
        while not self._stop.is_set():
            try:
                energy = float(nvml.nvmlDeviceGetTotalEnergyConsumption(handle)) if self.counter else None
                self._add(time.perf_counter(), float(nvml.nvmlDeviceGetPowerUsage(handle)),
                          {"energy_mj": energy} if energy is not None else None)
            except Exception as exc:  # noqa: BLE001
                self.error = f"NVML power reading failed: {exc}"
                return
            self._stop.wait(self.interval_s)

    def window(self, t0: float, t1: float) -> dict:
        with self._lock:
            energy = [(t, e["energy_mj"]) for t, e in self.extra if t0 <= t <= t1 and "energy_mj" in e]
        moved = [energy[i] for i in range(1, len(energy)) if energy[i][1] != energy[i - 1][1]]
        if len(moved) >= 2 and moved[-1][0] - moved[0][0] >= COUNTER_SPAN_S and moved[-1][1] > moved[0][1]:
            (ta, ea), (tb, eb) = moved[0], moved[-1]
            return {"source": self.source, "rails": "nvmlDeviceGetTotalEnergyConsumption (GPU board)",
                    "samples": len(moved), "avg_power_w": (eb - ea) / (tb - ta) / 1000.0}
        out = super().window(t0 + READING_AVERAGES_S, t1)
        if not out["samples"]:
            out["why"] = (f"NVML's power reading averages the last {READING_AVERAGES_S:g} s, so only readings taken "
                          f"that far into the loop count")
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def make_sampler(kind: str, interval_ms: int = 100, device_index: int = 0) -> PowerSampler:
    """'tegrastats', 'nvml' or 'none'."""
    if kind == "tegrastats":
        return TegrastatsSampler(interval_ms)
    if kind == "nvml":
        return NvmlSampler(device_index, interval_ms)
    return PowerSampler()
