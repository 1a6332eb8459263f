"""Torch → ONNX (parity-checked), FP16 ONNX, TensorRT engines and TensorRT-readiness checks.

Only `compress.exporting.onnx_export` imports torch; everything else needs numpy and onnx (onnxruntime,
onnxconverter-common and tensorrt inside the functions that use them), so the runtime side can
import `compress.exporting.engine_sidecar`, `compress.exporting.metadata` and `compress.exporting.trt_readiness` without torch.
"""
