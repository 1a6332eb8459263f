"""What runs on the deployment target: backends, latency/memory/energy measurement, FLOPs, reports.

Torch-free by design: numpy, onnx and onnxruntime are the core; openvino, tensorrt, cuda-python,
nvidia-ml-py and matplotlib are imported inside the functions that use them, and a missing one
raises `MissingExtraError` naming the pip extra. Only `compress.runtime.torch_runner` touches torch, and
only inside its functions, for the PyTorch reference backends.
"""
