"""Errors from the runtime side. Each carries a one-line message the CLI prints without a traceback."""

import re


class RuntimeBenchError(Exception):
    """A problem the user can act on: a bad artifact, an unusable backend, a failed measurement."""


class MissingExtraError(RuntimeBenchError):
    """An optional package is not installed; the message names the pip extra that provides it."""


class BackendUnavailableError(RuntimeBenchError):
    """The requested backend or execution provider cannot run here (or silently fell back to another)."""


class ArtifactError(RuntimeBenchError):
    """An artifact is missing, unreadable, or not of a kind the chosen backend runs."""


class CudaError(RuntimeBenchError):
    """A CUDA runtime call returned an error."""


class InputFileError(ArtifactError, ValueError):
    """A file read from outside (ONNX file, engine, sidecar, model.json, report) is not a regular file, is
    larger than its bound, is not UTF-8, or is not strict JSON (nested too deep, a key twice, NaN)."""


class SidecarError(ArtifactError):
    """An engine's sidecar is missing, unreadable, or disagrees with the running TensorRT or GPU."""


class NonFiniteOutputError(RuntimeBenchError):
    """A model produced NaN or infinite outputs: no accuracy is reported from them."""


class NotAClassifierError(RuntimeBenchError):
    """Accuracy was asked of a model that is not a classifier (one 2-D output, one column per class)."""


class ReportWriteError(RuntimeBenchError):
    """A benchmark report could not be written (disk full, read-only directory); nothing partial was left."""


# Where ONNX Runtime and OpenVINO wrote an error in their C++ sources: a reader can act on the sentence, not on
# the file, line and function signature around it.
_SOURCE = r"(?:\S*onnxruntime\S*|src/\S+)\.(?:h|hpp|c|cc|cpp|cu):\d+"  # ONNX Runtime's tree, OpenVINO's src/
_SOURCE_NOISE = re.compile("|".join([
    rf"Exception from {_SOURCE}:",  # OpenVINO's wrapper lines
    rf"Check '.*?' failed at {_SOURCE}:",  # OpenVINO's assertion, whose condition is code
    rf"{_SOURCE} (?:[\w:<>,*&~ ]*::)?[\w~<>]+\([^()]*\)(?: const)?",  # ONNX Runtime: file:line Class::fn(args)
    rf"{_SOURCE}:?",
]))


def readable(exc: BaseException, limit: int = 300) -> str:
    """An error from a runtime library as one line: its source locations and C++ signatures dropped, its
    remaining lines joined; the exception type's name if nothing is left."""
    text = _SOURCE_NOISE.sub(" ", str(exc))
    line = " ".join(text.split())
    return (line or type(exc).__name__)[:limit]


def one_line(exc: BaseException) -> str:
    """One line of an error: the first line of ours; a runtime library's own exception with its type's name and
    all its lines joined, without their C++ source locations (errors.readable)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, (RuntimeBenchError, ValueError, OSError)) and first:
        return first[:500]
    # A runtime library's own exception: its sentence, without its C++ source locations.
    return f"{type(exc).__name__}: {readable(exc, 500)}"[:500] if text else type(exc).__name__
