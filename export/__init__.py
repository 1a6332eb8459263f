"""Torch → ONNX (parity-checked), FP16 ONNX, TensorRT engines and TensorRT-readiness checks.

Only `export.onnx_export` imports torch; everything else needs numpy and onnx (onnxruntime,
onnxconverter-common and tensorrt inside the functions that use them), so the runtime side can
import `export.engine_sidecar`, `export.metadata` and `export.trt_readiness` without torch.
"""
