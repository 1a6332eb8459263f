import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def _share_the_cores() -> None:
    """pytest-xdist runs one process per core; each one's torch and ONNX Runtime would start a thread per
    core too, and the oversubscribed cores then spin-wait. Each worker gets its share, unless the caller
    set OMP_NUM_THREADS; the test processes it starts inherit it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


_share_the_cores()


def cifar_archive() -> Path | None:
    """The offline CIFAR-10 copy: COMPRESS_DATA when set, else the shared one beside the checkout."""
    env = os.environ.get("COMPRESS_DATA")
    if env and Path(env).exists():
        return Path(env)
    return SHARED_CIFAR if SHARED_CIFAR.exists() else None


@pytest.fixture(scope="session")
def cifar10_archive() -> Path:
    path = cifar_archive()
    if path is None:
        pytest.skip("no local CIFAR-10 copy: set COMPRESS_DATA to cifar10-jpeg.tar.gz")
    return path


@pytest.fixture(autouse=True, scope="session")
def _interrupts_raise():
    """A shell that starts the suite as a background job ignores SIGINT, and Python then leaves it ignored:
    the tests that interrupt a run would see nothing happen. Ctrl-C raises KeyboardInterrupt here, as in a
    terminal (children of the tests restore it too: tests_support.hostile_support.PAUSE_AT)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
