"""Registers the PyTorch reference backends (`torch`, `torch-compile`) with the runtime's backend registry.

The runtime stands alone (it imports nothing of compress/ and never torch); these backends run model
directories, which need the training side, so the training side adds them. `compress/__init__.py`
imports this module, so they are known wherever the `compress` package is. Registration imports only
the standard library: torch is imported when a torch runner is opened.
"""

from __future__ import annotations

from compress.runtime.backends import MODEL_DIR, ONNX, Backend, register_backend

for _name in ("torch", "torch-compile"):
    # An .onnx path stands for the model directory it sits in.
    register_backend(Backend(_name, (MODEL_DIR, ONNX), "compress.torch_runner:from_options",
                             "compress.torch_runner:check_available", runs="model directories"))
