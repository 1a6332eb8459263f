"""Latency statistics against hand-computed values."""

import math

import pytest

from compress.runtime.stats import noise_warning, summarize, throughput


def test_known_sample():
    s = summarize([1.0, 2.0, 3.0, 4.0, 10.0])
    assert s["n"] == 5
    assert s["mean_ms"] == pytest.approx(4.0)
    # sample std (ddof=1): deviations -3,-2,-1,0,6 → squares 9+4+1+0+36 = 50; 50/4 = 12.5
    assert s["std_ms"] == pytest.approx(math.sqrt(12.5))
    assert s["min_ms"] == 1.0 and s["max_ms"] == 10.0
    assert s["p50_ms"] == pytest.approx(3.0)
    # linear interpolation between order statistics: position 0.9 * 4 = 3.6 → 4 + 0.6 * (10 - 4)
    assert s["p90_ms"] == pytest.approx(7.6)
    assert s["p95_ms"] == pytest.approx(8.8)
    assert s["p99_ms"] == pytest.approx(9.76)
    assert s["cv"] == pytest.approx(math.sqrt(12.5) / 4.0)


def test_keys_end_in_ms_for_latencies():
    s = summarize([5.0, 5.0])
    assert {k for k in s if k.endswith("_ms")} == {"mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms",
                                                   "p99_ms", "max_ms"}
    assert s["std_ms"] == 0.0 and s["cv"] == 0.0


def test_throughput_uses_mean_latency():
    assert throughput(8, {"mean_ms": 4.0}) == pytest.approx(2000.0)


def test_noise_warning_above_five_percent_only():
    quiet = summarize([10.0, 10.2, 9.8, 10.1, 9.9])
    noisy = summarize([10.0, 12.0, 8.0, 11.0, 9.0])
    assert quiet["cv"] < 0.05 and noise_warning(quiet, "x") is None
    assert noisy["cv"] > 0.05
    message = noise_warning(noisy, "vgg batch 1")
    assert message.startswith("vgg batch 1") and "exceeds 5%" in message


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]])
def test_refuses_empty_or_nan(bad):
    with pytest.raises(ValueError):
        summarize(bad)
