"""Imports of the optional packages, each raising a message that names the pip extra providing it."""

from __future__ import annotations

import importlib

from compress.runtime.errors import MissingExtraError

TRT_EXTRA = "pip install 'cnn-compress[trt]'"
GPU_EXTRA = "pip install 'cnn-compress[gpu]'"
OPENVINO_EXTRA = "pip install 'cnn-compress[openvino]'"


def onnxruntime():
    """The onnxruntime module; warns once (one line) when several distributions provide it."""
    from compress.runtime.ort_packages import warn_once

    warn_once()
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingExtraError("onnxruntime is not installed: pip install onnxruntime "
                                f"(or, for the CUDA and TensorRT providers, {GPU_EXTRA} and see "
                                "docs/RUNTIME_INSTALL.md)") from None
    return ort


def _required(module: str, missing: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(missing) from None


def openvino():
    return _required("openvino", f"OpenVINO is not installed: {OPENVINO_EXTRA}")


def tensorrt():
    return _required("tensorrt", f"TensorRT is not installed: {TRT_EXTRA} "
                                 "(on Jetson, the JetPack python3-libnvinfer package)")


def cudart():
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+), else the older `cuda.cudart`."""
    try:
        from cuda.bindings import runtime as rt
    except ImportError:
        try:
            from cuda import cudart as rt
        except ImportError:
            raise MissingExtraError(f"cuda-python is not installed: {TRT_EXTRA}") from None
    return rt


def pynvml():
    return _required("pynvml", f"nvidia-ml-py (pynvml) is not installed: {GPU_EXTRA}")


def pyplot_free_figure():
    """matplotlib's Figure and Agg canvas, without touching the global pyplot backend."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib is not installed: pip install matplotlib (part of the core "
                                "requirements of cnn-compress)") from None
    return Figure, FigureCanvasAgg


def has_module(name: str) -> bool:
    """Whether `name` can be imported, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
