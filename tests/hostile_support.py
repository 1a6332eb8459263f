"""Helpers for the hostile-input tests (imported by bare name: tests/ is on sys.path).

Every hostile case asserts three things: the exit status, a one-line message naming the culprit, and
that nothing was left behind or changed (`snapshot` before and after: every file's sha256, hidden
temporaries included).
"""

from __future__ import annotations

import hashlib
import os
import signal
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
ROOT = Path(__file__).resolve().parents[1]


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
import sys, time, importlib
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
