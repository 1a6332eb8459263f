"""compress.runtime.paired: in turns, the ratio to the first artifact survives a machine that changes speed."""

import statistics

import numpy as np
import pytest

from compress.runtime.paired import interleave, median_interval, order, ratios, verdict
from compress.runtime.runner_base import Timings


class Machine:
    """A clock that flips between a fast and a 2x slower state every `period` iterations run on it."""

    def __init__(self, period: int):
        self.period = period
        self.steps = 0

    def factor(self) -> float:
        self.steps += 1
        return 1.0 if (self.steps // self.period) % 2 == 0 else 2.0


class FakeRunner:
    """Costs `ms` per iteration, times the machine's state at that moment (no real waiting)."""

    def __init__(self, ms: float, machine: Machine):
        self.ms, self.machine = ms, machine

    def measure(self, x, *, warmup=10, iters=None):
        for _ in range(warmup):
            self.machine.factor()
        times = [self.ms * self.machine.factor() for _ in range(iters)]
        return Timings(times, None, sum(times) / 1e3, len(x))


def test_in_turns_the_ratio_holds_through_speed_flips_that_bias_one_after_the_other():
    machine = Machine(period=150)
    runners = {"base": FakeRunner(1.0, machine), "pruned": FakeRunner(0.9, machine)}
    x = np.zeros((1, 3, 8, 8), np.float32)
    samples, iters, _ = interleave(runners, {n: x for n in runners}, 40, min_iters=20, warmup=0, block_s=0,
                                   settle_s=0)
    assert iters == 20 and all(len(v) == 40 for v in samples.values())
    found = ratios(samples, "base")
    assert found["base"]["ratio_median"] == 1.0
    assert found["pruned"]["ratio_median"] == pytest.approx(0.9, abs=1e-9)
    assert verdict(found["pruned"]) == "faster"
    # One after the other, on the same machine, the pruned network can meet the slow state and lose.
    alone = Machine(period=150)
    first = statistics.median(FakeRunner(1.0, alone).measure(x, warmup=0, iters=150).end_to_end_ms)
    second = statistics.median(FakeRunner(0.9, alone).measure(x, warmup=0, iters=150).end_to_end_ms)
    assert second / first == pytest.approx(1.8)


def test_blocks_run_long_enough_and_the_order_rotates():
    calls = []

    class Recording(FakeRunner):
        def __init__(self, name, ms, machine):
            super().__init__(ms, machine)
            self.name = name

        def measure(self, x, *, warmup=10, iters=None):
            calls.append((self.name, iters))
            return super().measure(x, warmup=warmup, iters=iters)

    machine = Machine(period=10 ** 9)
    runners = {n: Recording(n, 0.01, machine) for n in ("a", "b", "c")}
    x = np.zeros((1, 1), np.float32)
    _, iters, block_s = interleave(runners, {n: x for n in runners}, 6, min_iters=2, warmup=0, block_s=0.05,
                                   settle_s=0)
    assert iters == 5000 and block_s >= 0  # 50 ms of 0.01 ms iterations
    timed = [name for name, n in calls if n == iters]
    assert timed == list("abc" "cba" "bca" "acb" "cab" "bac")


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_every_runner_goes_first_and_last_equally_often_over_a_cycle(n):
    names = list(range(n))
    blocks = [order(names, b) for b in range(2 * n)]
    assert all(sorted(block) == names for block in blocks)
    assert sorted(block[0] for block in blocks) == sorted(names * 2)
    assert sorted(block[-1] for block in blocks) == sorted(names * 2)


def test_the_median_interval_holds_its_95_percent():
    rng = np.random.default_rng(1)
    for n in (6, 7, 15, 60):
        misses = sum(1 for _ in range(4000)
                     if not (lambda lo_hi: lo_hi[0] <= 0.0 <= lo_hi[1])(median_interval(rng.standard_normal(n))))
        assert misses / 4000 <= 0.05 + 0.012, n  # at most 5%, within the sampling error of 4000 draws
    assert median_interval(range(6)) == (0.0, 5.0)  # six values: only the extremes bound it at 95%
    assert median_interval(range(60)) == (21.0, 38.0)
    with pytest.raises(ValueError, match="at least 6"):
        median_interval([1.0, 2.0, 3.0, 4.0, 5.0])


def test_a_level_pair_and_refusals():
    found = ratios({"a": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0], "b": [1.1, 1.8, 0.9, 2.2, 1.05, 1.9]}, "a")
    assert verdict(found["b"]) == "level" and found["b"]["ratio_ci95"][0] < 1 < found["b"]["ratio_ci95"][1]
    assert verdict({"ratio_ci95": [1.01, 1.05]}) == "slower"
    with pytest.raises(ValueError, match="no usable block times"):
        ratios({"a": [0.0] + [1.0] * 5, "b": [1.0] * 6}, "a")
    with pytest.raises(ValueError, match="has 5 block times, not all usable, for the reference's 6"):
        ratios({"a": [1.0] * 6, "b": [1.0] * 5}, "a")
    with pytest.raises(ValueError, match="6 to 10000 blocks"):
        interleave({"a": FakeRunner(1.0, Machine(5))}, {"a": np.zeros(1)}, 5)
