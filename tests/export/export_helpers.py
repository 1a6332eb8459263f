"""Helpers for the export tests: tiny models with non-trivial weights, inputs and metadata."""

import numpy as np
import torch

CLASSES = [f"c{i}" for i in range(10)]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def metadata(arch="test", **over):
    return {"classes": CLASSES, "mean": MEAN, "std": STD, "input_size": [3, 32, 32], "arch": arch,
            "precision": "fp32", "source_sha256": "0" * 64, "toolkit_version": "0.1.0", **over}


def lively(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics/affine and logits of order 1, so parity checks compare real signals
    (a freshly initialised net has identical BN layers and logits near zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        model.eval()
        last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
        logits = model(torch.randn(16, 3, 32, 32, generator=g))
        scale = 3.0 / max(float(logits.std()), 1e-12)
        last.weight.mul_(scale)
        if last.bias is not None:
            last.bias.mul_(scale)
    return model


def images(n: int, seed: int = 0) -> np.ndarray:
    """Normalized random uint8 images, as the CLI makes them when no data is given."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3, 32, 32)).astype(np.float32) / 255.0
    return ((x - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]).astype(
        np.float32)
