"""Errors from the export stage. Each carries a one-line message; the CLI prints it without a traceback."""

from compress.runtime import errors as _runtime_errors


class ExportError(Exception):
    """A problem the user can act on (bad input file, failed check, missing optional package)."""


class ParityError(ExportError):
    """The exported model's outputs differ from the reference beyond tolerance."""


class OnnxFileError(ExportError):
    """An ONNX file is missing, corrupt, truncated or fails the ONNX checker."""


class MissingExtraError(ExportError):
    """An optional package is not installed; the message names the pip extra that provides it."""


class TrtReadinessError(ExportError):
    """The ONNX graph has constructs TensorRT cannot build."""


class EngineBuildError(ExportError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


# The runtime reads and checks engine sidecars, so their error is the runtime's (an ArtifactError).
SidecarError = _runtime_errors.SidecarError
