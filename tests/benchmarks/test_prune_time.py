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
