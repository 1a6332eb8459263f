"""Helpers for the export tests: tiny models with non-trivial weights, inputs and metadata."""

import numpy as np
import onnx
from onnx import numpy_helper
from tests_support import lively  # noqa: F401 - re-exported for the export tests

CLASSES = [f"c{i}" for i in range(10)]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def metadata(arch="test", **over):
    return {"classes": CLASSES, "mean": MEAN, "std": STD, "input_size": [3, 32, 32], "arch": arch,
            "precision": "fp32", "source_sha256": "0" * 64, "toolkit_version": "0.1.0", **over}




def images(n: int, seed: int = 0) -> np.ndarray:
    """Normalized random uint8 images, as the CLI makes them when no data is given."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3, 32, 32)).astype(np.float32) / 255.0
    return ((x - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]).astype(
        np.float32)


def scaled_gemm(src, dst, factor):
    """Copy of an ONNX file with its classifier (Gemm) weights scaled by `factor`: a file that computes
    something else than its reference."""
    model = onnx.load(str(src))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    init = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, init.name))
    onnx.save(model, str(dst))
    return dst
