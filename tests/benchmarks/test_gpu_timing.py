"""benchmarks/gpu/gpu_timing.py: the energy of a timed loop, read between two updates of NVML's counter."""

import importlib.util
import types
from pathlib import Path

import pytest
import torch

GPU = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu"


def _load(name):
    import sys

    spec = importlib.util.spec_from_file_location(f"{name}_under_test", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def gpu_timing(monkeypatch):
    """The module on a clock of its own that moves 1 ms at every reading, so that no test depends on the load."""
    module = _load("gpu_timing")
    now = {"t": 0.0}

    def perf_counter():
        now["t"] += 0.001
        return now["t"]

    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=perf_counter))
    module.clock = now
    return module


class SteppedCounter:
    """NVML's total-energy counter as boards keep it: 1 J more every `period` seconds of the module's clock."""

    handle = "gpu0"

    def __init__(self, module, period: float | None, stop_after: float | None = None):
        self.clock, self.period, self.stop_after = module.clock, period, stop_after

    def read_mj(self) -> float:
        t = self.clock["t"]
        if self.period is None:
            return 5_000.0
        if self.stop_after is not None:
            t = min(t, self.stop_after)
        return 5_000.0 + 1_000.0 * int(t / self.period)


def _measure(module, energy, seconds=0.1):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    spec = {"device": torch.device("cpu"), "input_shape": (3, 8, 8), "mean": [0.5] * 3, "std": [0.25] * 3,
            "warmup": 1, "min_iters": 3, "seconds": seconds}
    return module.measure(model, 2, "fp32", "eager", spec, energy)


def test_the_loop_starts_and_ends_on_updates_of_the_counter(gpu_timing):
    # 1 J per 40 ms is 25 W. Read at arbitrary moments, a 0.1 s loop shows 2 or 3 steps (20 or 30 W);
    # between two updates it shows whole periods, up to one iteration (here 4 ms of the module's clock).
    row = _measure(gpu_timing, SteppedCounter(gpu_timing, 0.04))
    power = row["power"]
    assert power["avg_power_w"] == pytest.approx(25.0, rel=0.05)
    steps = round(row["elapsed_s"] / 0.04)
    assert steps >= 3 and row["elapsed_s"] == pytest.approx(steps * 0.04, abs=0.005)
    assert power["energy_per_image_mj"] == pytest.approx(steps * 1000.0 / (row["iterations"] * 2))
    assert row["warnings"] == []


@pytest.mark.parametrize("counter", ["still", "stops", "resets"])
def test_a_counter_that_does_not_rise_gives_no_energy_and_says_so(gpu_timing, counter):
    if counter == "still":
        energy = SteppedCounter(gpu_timing, None)
    elif counter == "stops":  # moves at the start, then never again
        energy = SteppedCounter(gpu_timing, 0.04, stop_after=0.05)
    else:  # set back to zero (a driver reload) in the middle of the loop
        energy = SteppedCounter(gpu_timing, 0.04)
        read = energy.read_mj
        energy.read_mj = lambda: read() if gpu_timing.clock["t"] < 0.08 else 0.0
    row = _measure(gpu_timing, energy)
    assert "power" not in row and row["iterations"] >= 3
    assert row["warnings"] == [f"NVML energy counter did not move within {gpu_timing.TICK_WAIT_S} s: "
                               "no energy reported"]


def test_no_counter_at_all_costs_no_wait_and_no_warning(gpu_timing):
    class Absent:
        handle = None

        def read_mj(self):
            raise AssertionError("read without a counter")

    row = _measure(gpu_timing, Absent())
    assert "power" not in row and row["warnings"] == [] and gpu_timing.clock["t"] < gpu_timing.TICK_WAIT_S


def test_deployment_variants_come_in_whole_pairs_bf16_first_compiling_last():
    import sys

    sys.path.insert(0, str(GPU))  # gpu_deploy imports its neighbours by name
    try:
        deploy = _load("gpu_deploy")
    finally:
        sys.path.remove(str(GPU))
    nets = [{"name": n} for n in ("vgg19", "vgg19-slim", "resnet18", "resnet18-slim")]
    plan = deploy._plan(nets, deploy.FULL, cuda=True)
    keys = [(mode, precision) for _, mode, precision, _, _ in plan]
    assert len(plan) == 4 * 3 * 3 and len(set((n["name"], *k) for (n, *_), k in zip(plan, keys))) == len(plan)
    # Every cut after an even number of variants leaves only whole pairs (unpruned, then slimmed).
    for i in range(0, len(plan), 2):
        (a, *ka), (b, *kb) = plan[i], plan[i + 1]
        assert (a["name"], b["name"]) in {("vgg19", "vgg19-slim"), ("resnet18", "resnet18-slim")}
        assert ka[:2] == kb[:2]
    first_compile = keys.index(("compile", "bf16"))
    assert {m for m, _ in keys[:first_compile]} == {"eager", "cudagraph"}
    assert [p for _, p in keys[:first_compile]][::8] == ["bf16", "fp32", "fp16"]
