"""Errors from the runtime side. Each carries a one-line message the CLI prints without a traceback."""


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
