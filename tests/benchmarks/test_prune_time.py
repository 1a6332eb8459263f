"""benchmarks/prune_time.py: one line per network with the seconds its prune took; usage without names."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prune_time.py"), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_it_times_each_network_named():
    done = _run("tv:resnet18")
    assert done.returncode == 0, done.stderr[-2000:]
    name, seconds, unit = done.stdout.split()
    assert name == "tv:resnet18" and float(seconds) > 0 and unit == "s"


def test_without_names_it_says_how_to_use_it():
    done = _run()
    assert done.returncode == 2 and "prune_time.py timm:pnasnet5large" in done.stderr


def test_an_unknown_name_or_a_refused_network_is_one_line_and_a_failing_exit():
    done = _run("nope:x", "tv:squeezenet1_1")
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("nope:x: ValueError: unknown zoo name")
    assert lines[1].startswith("tv:squeezenet1_1: CompressError: SqueezeNet has no BatchNorm2d layers")
