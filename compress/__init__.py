"""Network slimming and deployment compression for convolutional networks.

The public API (see the README's "Python API"): everything in ``__all__`` is importable from
``compress`` directly. Importing the package stays cheap (no torch until a name is used), so that
``compress --help`` and the torch-free runtime install stay fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# The runtime's backend registry learns the PyTorch backends (torch, torch-compile) from this side.
from compress import torch_backends as _torch_backends  # noqa: E402,F401

# name -> (module, attribute); resolved on first use.
_API = {
    "CompressError": ("compress.errors", "CompressError"),
    # training loop pieces
    "SparsityRegularizer": ("compress.sparsity", "SparsityRegularizer"),
    "SparsityConfig": ("compress.sparsity", "SparsityConfig"),
    "TargetedSparsity": ("compress.sparsity_targeted", "TargetedSparsity"),
    "Budget": ("compress.sparsity", "Budget"),
    "param_groups": ("compress.sparsity", "param_groups"),
    "polarization": ("compress.sparsity", "polarization"),
    # pruning
    "prune": ("compress.plan", "prune"),
    "Plan": ("compress.plan", "Plan"),
    "PruneRequest": ("compress.request", "PruneRequest"),
    # model directories
    "save_model": ("compress.artifact", "save_model"),
    "load_model": ("compress.artifact", "load_model"),
    "import_weights": ("compress.stages.import_weights", "import_weights"),
    # data
    "load_dataset": ("compress.data", "load_dataset"),
    "DataOptions": ("compress.data.options", "DataOptions"),
    # the stages over model directories, as the CLI runs them
    "Recipe": ("compress.training", "Recipe"),
    "RunOptions": ("compress.stages._run", "RunOptions"),
    "evaluate": ("compress.training", "evaluate"),
    "train": ("compress.stages.train", "train"),
    "finetune": ("compress.stages.finetune", "finetune"),
    "slim": ("compress.stages.slim", "slim"),
    "SlimOptions": ("compress.stages.slim", "SlimOptions"),
    # stage one and deployment, over model directories and files
    "export": ("compress.stages.export", "export"),
    "Parity": ("compress.stages.export", "Parity"),
    "OnnxShape": ("compress.stages.export", "OnnxShape"),
    "Engine": ("compress.stages.export", "Engine"),
    "quantize": ("compress.quantization", "quantize_model"),
    "QuantizeOptions": ("compress.quantization", "QuantizeOptions"),
    "share": ("compress.sharing.share", "share_model"),
    "ShareOptions": ("compress.sharing.share", "ShareOptions"),
    "decompress": ("compress.sharing.share", "decompress"),
    "bench": ("compress.benchmarking", "bench_artifacts"),
    "BenchSettings": ("compress.runtime.bench", "BenchSettings"),
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
    elif name.isidentifier() and not name.startswith("_"):
        # A subpackage the README names (compress.slimming.removal_preview) after a plain `import compress`.
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the subpackage exists and lacks a dependency: say so, not "no attribute"
            raise AttributeError(f"module 'compress' has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module 'compress' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
