"""Helpers for the hostile-input tests (imported by bare name: tests/ is on sys.path).

Every hostile case asserts three things: the exit status, a one-line message naming the culprit, and
that nothing was left behind or changed (`snapshot` before and after: every file's sha256, hidden
temporaries included).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import torch
from click.testing import CliRunner
from tests_support import lively, make_image_folder

from compress.cli import main

CLASSES = [f"c{i}" for i in range(10)]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
ROOT = Path(__file__).resolve().parents[2]


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256 or '<dir>'} of everything under `root`, hidden files included."""
    out = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "<dir>"
        for f in filenames:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "-> " + os.readlink(p)
            elif not stat.S_ISREG(os.stat(p).st_mode):
                out[rel] = f"<special {stat.S_IFMT(os.stat(p).st_mode):o}>"  # a FIFO: reading it would block
            elif os.stat(p).st_size > 2**30:
                st = os.stat(p)  # a sparse giant made by a test: its size and time stand for its content
                out[rel] = f"<{st.st_size} bytes, mtime {st.st_mtime_ns}>"
            else:
                out[rel] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def invoke(args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, **kw)


def error_lines(result) -> list[str]:
    return [ln for ln in result.output.splitlines() if ln.startswith("Error")]


def assert_refused(result, *needles: str, code: int = 2, usage: bool = False) -> str:
    """Exit `code`, no traceback, and the error in one line holding every needle.

    Our own errors are the only output line; click's usage errors (usage=True) come after its two-line
    usage header, which is click's format and kept as is."""
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out, out
    errors = error_lines(result)
    assert len(errors) == 1, out
    line = errors[0]
    if not usage:
        # Progress notes ("data: ... in memory", "exported ...") may precede it: the error is one line, the last.
        lines = [ln for ln in out.splitlines() if ln.strip()]
        assert lines[-1] == line, out
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert "KeyError" not in line and "set COMPRESS_DEBUG" not in line, line
    return line


def refused_unchanged(work: Path, args, *needles: str, code: int = 2, usage: bool = False) -> str:
    """Run the CLI with `args`: refused as `assert_refused` says, with every file under `work` unchanged."""
    before = snapshot(work)
    line = assert_refused(invoke(args), *needles, code=code, usage=usage)
    assert snapshot(work) == before
    return line




def make_model_dir(path: Path, width: float = 0.0625, classes=CLASSES) -> Path:
    """A tiny VGG-11 model directory (about 37k parameters)."""
    from compress.artifact import save_model_dir
    from compress.models import create_model

    torch.manual_seed(0)
    model = lively(create_model("vgg11", num_classes=len(classes), width=width))
    save_model_dir(model, path, {"arch": "vgg11", "arch_kwargs": {"num_classes": len(classes), "width": width},
                                 "classes": list(classes), "input_size": [3, 32, 32],
                                 "normalization": {"mean": MEAN, "std": STD}})
    return path


def export_onnx_file(model_dir: Path, out: Path) -> Path:
    from compress import __version__
    from compress.artifact import load_model_dir
    from compress.exporting.onnx_export import export_onnx

    model, meta = load_model_dir(model_dir)
    export_onnx(model, out, input_size=[3, 32, 32],
                metadata={"classes": meta["classes"], "mean": MEAN, "std": STD, "input_size": [3, 32, 32],
                          "arch": "vgg11", "precision": "fp32", "source_sha256": "0" * 64,
                          "toolkit_version": __version__})
    return out


def make_images(root: Path, classes=("a", "b"), per_class: int = 4, size: int = 32) -> Path:
    return make_image_folder(root, classes=classes, per_class=per_class, size=size)


def run_until_marker(code: str, marker: str, sig: int, cwd: Path, timeout: float = 120.0):
    """Run `python -c code` (which prints `marker` on stdout at the point to interrupt, then waits),
    send `sig` when the marker appears, and return (exit status, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            if marker in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise AssertionError(f"the process ended before {marker!r}: {proc.stderr.read()[-2000:]}")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


# Python that runs the CLI with one library function replaced by "announce, then wait for a signal".
PAUSE_AT = """
import sys, time, importlib, signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background parent may have it ignored
mod = importlib.import_module({module!r})
real = getattr(mod, {attr!r})
def paused(*a, **k):
    result = real(*a, **k)
    print("PAUSED", flush=True)
    time.sleep(60)
    return result
setattr(mod, {attr!r}, paused)
from compress.cli import main
sys.argv = ["compress", *{args!r}]
main()
"""


def pause_at(module: str, attr: str, args) -> str:
    return PAUSE_AT.format(module=module, attr=attr, args=[str(a) for a in args])


SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


# --- bounding a case that hangs or explodes on broken code -------------------------------------------------

class Hung(AssertionError):
    """A case ran past its deadline: on fixed code it is refused at once, so running long is the failure."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise Hung in the main thread once `seconds` have passed (SIGALRM; a blocked open() of a FIFO is
    interrupted too). Import heavy modules before entering, so that only the case itself is timed."""
    def fire(_signum, _frame):
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def memory_cap(extra: int = 2 * 2**30):
    """Cap this process's address space at its current size plus `extra` while the block runs: code that
    would read a 3 GB file or build a network of 44 GB gets a MemoryError, not the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """A full disk, as the kernel reports it to any writer (C and Rust ones included): every write past
    `nbytes` in a file fails with EFBIG ("File too large"), SIGXFSZ being ignored."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def read_only(path: Path, monkeypatch) -> Path:
    """Make the folder `path` read-only. Root ignores permissions, so for root every attempt to create
    something inside it is refused as the kernel refuses it to anyone else (EACCES): os.open with
    O_CREAT, os.mkdir, and open() for writing, which is what every writer starts with."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    if os.geteuid() != 0:
        return path
    inside = str(path.resolve()) + os.sep

    def refused(target) -> bool:
        try:
            return os.path.realpath(os.fspath(target)).startswith(inside)
        except TypeError:  # a file descriptor
            return False

    def deny(target):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(target))

    real_os_open, real_mkdir, real_open = os.open, os.mkdir, builtins.open

    def os_open(target, flags, *args, **kwargs):
        if flags & os.O_CREAT and refused(target):
            deny(target)
        return real_os_open(target, flags, *args, **kwargs)

    def mkdir(target, *args, **kwargs):
        if refused(target):
            deny(target)
        return real_mkdir(target, *args, **kwargs)

    def open_(target, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and refused(target):
            deny(target)
        return real_open(target, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)
    return path


def poison(model_dir: Path, tensor: str = "features.0.weight", value: float = float("nan")) -> Path:
    """Put one non-finite value into a model directory's weights."""
    from safetensors.torch import load_file, save_file

    weights = Path(model_dir) / "model.safetensors"
    state = load_file(str(weights))
    state[tensor].view(-1)[0] = value
    save_file(state, str(weights))
    return model_dir


def run_cli(args, cwd: Path, timeout: float = 60.0, memory: int | None = None, stdout=subprocess.PIPE):
    """`python -m compress.cli ARGS` in a child process (for cases that would take the test process down
    on broken code: thousands of threads, say), with an address-space cap of `memory` bytes."""
    def limit():
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "compress.cli", *[str(a) for a in args]], cwd=cwd, env=env,
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout, preexec_fn=limit)


_WORKSPACE: dict[str, Path] = {}


def workspace(tmp_path_factory) -> Path:
    """One read-only template per test session: a tiny VGG-11 model directory `vgg` (10 classes), its
    FP32 ONNX `vgg.onnx`, and an image folder `data` (train/ and test/, two images per class). Tests copy
    it (see `fresh_copy`), so each case starts from the same files."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _WORKSPACE:
        root = tmp_path_factory.mktemp("hostile-template")
        make_model_dir(root / "vgg")
        export_onnx_file(root / "vgg", root / "vgg.onnx")
        make_images(root / "data", classes=tuple(CLASSES), per_class=2)
        _WORKSPACE[key] = root
    return _WORKSPACE[key]


def fresh_copy(template: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(template, dest, symlinks=True)
    return dest


def bench_refused(work: Path, args, *needles: str) -> str:
    """bench's way of refusing an artifact: its row says why, then one summary line, exit status 1
    (test_hostile_runtime's convention). Every needle appears in the output; nothing changed."""
    before = snapshot(work)
    result = invoke(args)
    out = result.output
    assert result.exit_code in (1, 2) and "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("Error") and "COMPRESS_DEBUG" not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in {out!r}"
    assert snapshot(work) == before
    return out
