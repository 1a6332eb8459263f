"""Thin helpers over cuda-python's runtime API (every call returns a tuple starting with the error).

Used by the TensorRT runner; imported only there, so a CPU box never needs cuda-python.
"""

from __future__ import annotations

import ctypes

import numpy as np

from compress.runtime.errors import CudaError
from compress.runtime.optional import cudart


def call(result, what: str):
    """Check a cuda-python result tuple; return its value (None, one value, or a tuple of them)."""
    rt = cudart()
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    if err != rt.cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed: {_error_name(rt, err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def _error_name(rt, err) -> str:
    try:
        _, name = rt.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - only used to word an error
        return str(err)


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(name, 'major.minor') decoded the way the engine builder records them in the sidecar."""
    rt = cudart()
    prop = call(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), f"{prop.major}.{prop.minor}"


def mem_get_info() -> tuple[int, int]:
    """(free, total) device memory in bytes."""
    free, total = call(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


def driver_and_runtime_versions() -> dict:
    rt = cudart()
    out = {}
    for key, fn in (("cuda_driver", "cudaDriverGetVersion"), ("cuda_runtime", "cudaRuntimeGetVersion")):
        try:
            v = int(call(getattr(rt, fn)(), fn))
            out[key] = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception:  # noqa: BLE001 - informational only
            out[key] = None
    return out


class Stream:
    """A non-default, non-blocking stream (the legacy default stream would serialise with everything)."""

    def __init__(self):
        rt = cudart()
        self.handle = call(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")

    def __int__(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        call(cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self.handle is not None:
            call(cudart().cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class Event:
    def __init__(self):
        self.handle = call(cudart().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Stream) -> None:
        call(cudart().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        call(cudart().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def elapsed_ms(self, start: "Event") -> float:
        return float(call(cudart().cudaEventElapsedTime(start.handle, self.handle), "cudaEventElapsedTime"))

    def destroy(self) -> None:
        if self.handle is not None:
            call(cudart().cudaEventDestroy(self.handle), "cudaEventDestroy")
            self.handle = None


class DeviceBuffer:
    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(call(cudart().cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            call(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class PinnedArray:
    """Page-locked host memory viewed as a numpy array (asynchronous copies need pinned memory)."""

    def __init__(self, shape, dtype):
        dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.ptr = int(call(cudart().cudaMallocHost(max(self.nbytes, 1)), "cudaMallocHost"))
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            call(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


def copy_htod_async(dst: DeviceBuffer, src: PinnedArray, nbytes: int, stream: Stream) -> None:
    rt = cudart()
    call(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.handle),
         "cudaMemcpyAsync host to device")


def copy_dtoh_async(dst: PinnedArray, src: DeviceBuffer, nbytes: int, stream: Stream) -> None:
    rt = cudart()
    call(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.handle),
         "cudaMemcpyAsync device to host")


class Graph:
    """A CUDA graph captured from the work `enqueue` puts on `stream`, replayed with one launch."""

    def __init__(self, stream: Stream, enqueue):
        rt = cudart()
        call(rt.cudaStreamBeginCapture(stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
             "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            graph = call(rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        try:
            result = rt.cudaGraphInstantiate(graph, 0)
        except TypeError:  # bindings whose cudaGraphInstantiate takes other arguments
            result = rt.cudaGraphInstantiateWithFlags(graph, 0)
        value = call(result, "cudaGraphInstantiate")
        self.exec = value[0] if isinstance(value, tuple) else value
        call(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def launch(self, stream: Stream) -> None:
        call(cudart().cudaGraphLaunch(self.exec, stream.handle), "cudaGraphLaunch")

    def destroy(self) -> None:
        if self.exec is not None:
            call(cudart().cudaGraphExecDestroy(self.exec), "cudaGraphExecDestroy")
            self.exec = None
