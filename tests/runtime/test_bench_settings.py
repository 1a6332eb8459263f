"""Benchmark settings are bounded before anything is loaded: each refusal names its bound."""

import pytest

from compress.runtime.bench_settings import MAX_BATCH, MAX_ITERS, MAX_THREADS, BenchSettings


@pytest.mark.parametrize("kwargs,words", [
    ({"threads": 1_000_000}, f"threads must be between 1 and {MAX_THREADS}"),
    ({"threads": 0}, "threads must be between 1"),
    ({"threads": 2.5}, "threads must be an integer"),
    ({"streams": 10**6}, "streams must be between 1 and 1024"),
    ({"batches": (2**40,)}, f"batch size must be between 1 and {MAX_BATCH}"),
    ({"batches": (1, 8, 1)}, "batch size 1 is given twice"),
    ({"batches": (1.5,)}, "positive integers"),
    ({"batches": tuple(range(1, 100))}, "at most 64 batch sizes"),
    ({"iters": 10**12}, f"iters must be between 2 and {MAX_ITERS}"),
    ({"iters": None, "duration_s": 1e9}, "at most 86400 s"),
    ({"iters": None, "duration_s": float("inf")}, "positive and finite"),
    ({"warmup": 10**9}, "warmup must be between 0 and 100000"),
    ({"device": 10**6}, "device must be between 0 and 255"),
    ({"power_interval_ms": 0}, "power interval"),
    ({"accuracy_batch": 0}, "accuracy batch"),
    ({"backend": ""}, "unknown backend ''"),
])
def test_out_of_bounds_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", "\\(")):
        BenchSettings(**kwargs)


def test_settings_within_bounds_are_kept():
    s = BenchSettings(backend="torch", batches=(1, 8), threads=MAX_THREADS, iters=MAX_ITERS)
    assert s.batches == (1, 8) and s.threads == MAX_THREADS and s.iters == MAX_ITERS
