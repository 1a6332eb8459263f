"""What runs on the deployment target: backends, latency/memory/energy measurement, FLOPs, reports.

Torch-free and standalone by design: it imports nothing of the other rooms (compress/, export/,
models/; checked by tests/runtime/test_standalone.py), which may all import it. numpy, onnx and
onnxruntime are the core; openvino, tensorrt, cuda-python, nvidia-ml-py and matplotlib are imported
inside the functions that use them, and a missing one raises `MissingExtraError` naming the pip extra.
The PyTorch reference backends (`torch`, `torch-compile`) run model directories, so they live on the
training side (compress.torch_runner) and join the backend registry (compress.runtime.backends) when
`compress` is imported.

Shared with the other rooms: one atomic writer (atomic), one bounded strict JSON reader (strict_json)
and the regular-file checks behind it (input_files), and the engine sidecar format (engine_sidecar).
"""
