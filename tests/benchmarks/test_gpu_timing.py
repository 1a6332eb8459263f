"""benchmarks/gpu/gpu_timing.py: the energy of a timed loop, read between two updates of NVML's counter."""

import importlib.util
import time
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu" / "gpu_timing.py"


@pytest.fixture(scope="module")
def gpu_timing():
    spec = importlib.util.spec_from_file_location("gpu_timing_under_test", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SteppedCounter:
    """NVML's total-energy counter as boards keep it: 1 J more every `period` seconds, in steps."""

    handle = "gpu0"

    def __init__(self, period: float | None):
        self.period, self.t0 = period, time.perf_counter()

    def read_mj(self) -> float:
        if self.period is None:
            return 5_000.0
        return 5_000.0 + 1_000.0 * int((time.perf_counter() - self.t0) / self.period)


def _measure(gpu_timing, energy):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    spec = {"device": torch.device("cpu"), "input_shape": (3, 8, 8), "mean": [0.5] * 3, "std": [0.25] * 3,
            "warmup": 1, "min_iters": 3, "seconds": 0.1}
    return gpu_timing.measure(model, 2, "fp32", "eager", spec, energy)


def test_the_loop_starts_and_ends_on_updates_of_the_counter(gpu_timing):
    # A steady 1 J per 40 ms is 25 W: read at arbitrary moments, a 0.1 s loop would show 2 or 3 steps
    # (20 or 30 W); between two updates it shows whole periods, so the power is 25 W up to timer jitter.
    row = _measure(gpu_timing, SteppedCounter(0.04))
    power = row["power"]
    assert power["avg_power_w"] == pytest.approx(25.0, rel=0.1)
    steps = round(row["elapsed_s"] / 0.04)
    assert steps >= 3 and row["elapsed_s"] == pytest.approx(steps * 0.04, rel=0.1)
    assert power["energy_per_image_mj"] == pytest.approx(steps * 1000.0 / (row["iterations"] * 2))
    assert row["warnings"] == []


def test_a_counter_that_does_not_move_gives_no_energy_and_says_so(gpu_timing):
    row = _measure(gpu_timing, SteppedCounter(None))
    assert "power" not in row and row["iterations"] >= 3
    assert row["warnings"] == [f"NVML energy counter did not move within {gpu_timing.TICK_WAIT_S} s: "
                               "no energy reported"]


def test_no_counter_at_all_costs_no_wait_and_no_warning(gpu_timing):
    class Absent:
        handle = None

        def read_mj(self):
            raise AssertionError("read without a counter")

    t0 = time.perf_counter()
    row = _measure(gpu_timing, Absent())
    assert "power" not in row and row["warnings"] == [] and time.perf_counter() - t0 < gpu_timing.TICK_WAIT_S + 1
