import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


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
