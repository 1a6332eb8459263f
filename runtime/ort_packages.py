"""Which ONNX Runtime distributions are installed: they all provide the one `onnxruntime` module.

`onnxruntime` (CPU) and `onnxruntime-gpu` (CUDA and TensorRT providers) write the same files;
with both installed, whichever was installed last wins file by file, and `import onnxruntime` can
load a mix. pip cannot express "one of", so the `gpu` extra adds onnxruntime-gpu beside the core's
onnxruntime, and the switch is done by hand (docs/RUNTIME_INSTALL.md):

    pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu

This module finds the conflict from package metadata alone (nothing imported) and words the warning.
"""

from __future__ import annotations

from importlib import metadata as _metadata

# Distributions that install the `onnxruntime` Python module.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                     "onnxruntime-qnn", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu")
SWITCH_TO_GPU = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"

_warned = False


def installed(version=None) -> dict[str, str]:
    """{distribution: version} of the ONNX Runtime distributions present; `version` is
    importlib.metadata.version (replaceable in tests)."""
    version = version or _metadata.version
    found = {}
    for dist in ORT_DISTRIBUTIONS:
        try:
            found[dist] = version(dist)
        except _metadata.PackageNotFoundError:
            continue
    return found


def conflict_message(found: dict[str, str]) -> str | None:
    """One line when more than one distribution provides `onnxruntime`, else None."""
    if len(found) < 2:
        return None
    listing = ", ".join(f"{d} {v}" for d, v in found.items())
    fix = SWITCH_TO_GPU if "onnxruntime-gpu" in found else f"pip uninstall -y {' '.join(found)} && pip install ONE_OF_THEM"
    return (f"several ONNX Runtime distributions share the onnxruntime module ({listing}); the files of the last "
            f"one installed win and providers may be missing: {fix}")


def warn_once(emit=None, version=None) -> str | None:
    """Print the conflict line once per process (on stderr by default); returns it, or None."""
    global _warned
    message = conflict_message(installed(version))
    if message and not _warned:
        _warned = True
        if emit is None:
            import sys

            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            emit(message)
    return message
