"""The INT8 recipe of each target: how it wants its Q/DQ graph, and where its accuracy is measured.

See the package docstring (compress.quantization) for what each target's recipe is and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.errors import CompressError

TARGETS = ("trt", "cpu")
CPU_ISAS = ("auto", "vnni", "avx2", "arm64")


@dataclass(frozen=True)
class Recipe:
    """How a target wants its INT8 graph: onnxruntime.quantization options plus where accuracy is measured."""

    target: str
    isa: str | None  # cpu: 'vnni', 'avx2' or 'arm64'; trt: None
    activation_type: str  # 'int8' or 'uint8'
    activation_symmetric: bool
    reduce_range: bool
    quantize_bias: bool
    fused_kernels: bool  # measure accuracy in ONNX Runtime's optimized session (its own int8 kernels)
    weights: str = "int8 symmetric per-channel (output-channel axis)"

    def describe(self) -> dict:
        sign = {"int8": "S8", "uint8": "U8"}[self.activation_type]
        return {"target": self.target, "instruction_set": self.isa, "format": "QDQ",
                "data_types": f"{sign}S8 (activations {self.activation_type}, weights int8)",
                "activations": f"{self.activation_type} {'symmetric' if self.activation_symmetric else 'asymmetric'}"
                               " per-tensor",
                "weights": self.weights + (", 7-bit range (reduce_range)" if self.reduce_range else ""),
                "bias": "int32" if self.quantize_bias else "float32", "reduce_range": self.reduce_range}


def recipe_for(target: str = "trt", isa: str = "auto") -> Recipe:
    """The INT8 recipe for `target`; for 'cpu', `isa` 'auto' reads this machine's CPU flags."""
    if target not in TARGETS:
        raise CompressError(f"unknown --target {target!r}; choose from {', '.join(TARGETS)}")
    if target == "trt":
        return Recipe("trt", None, "int8", True, reduce_range=False, quantize_bias=False, fused_kernels=False)
    if isa not in CPU_ISAS:
        raise CompressError(f"unknown --cpu-isa {isa!r}; choose from {', '.join(CPU_ISAS)}")
    if isa == "auto":
        from compress.runtime.cpu_features import int8_isa

        isa = int8_isa()
    if isa == "avx2":
        return Recipe("cpu", "avx2", "uint8", False, reduce_range=True, quantize_bias=True, fused_kernels=True)
    return Recipe("cpu", isa, "int8", False, reduce_range=False, quantize_bias=True, fused_kernels=True)


def eval_session_settings(recipe: Recipe) -> dict:
    """The ONNX Runtime session the reported INT8 accuracy comes from."""
    import onnxruntime as ort

    level = "ORT_ENABLE_ALL" if recipe.fused_kernels else "ORT_ENABLE_BASIC"
    how = ("graph optimizations on: Q/DQ fused into ONNX Runtime's int8 CPU kernels" if recipe.fused_kernels
           else "Q/DQ executed as written (basic optimizations only), as TensorRT's int8 kernels compute it")
    return {"provider": "CPUExecutionProvider", "graph_optimization_level": level, "onnxruntime": ort.__version__,
            "what": how}
