"""AdaptiveAvgPool2d in a form the TorchScript ONNX exporter accepts at any input size.

The exporter only writes an AdaptiveAvgPool2d whose output size divides its input size (as an
AveragePool). torchvision's VGG and AlexNet pool to 7x7 / 6x6, so below 224 px (VGG at 64 px sees a
2x2 map) their export fails. Adaptive average pooling is separable: output = R · x · Cᵀ, with R and C
the row and column averaging matrices of its bins. For export only, such layers are swapped for two
MatMuls with those constant matrices, which compute the same values; the model is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn


def averaging_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) matrix whose row i averages adaptive pooling's bin i."""
    m = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start, end = (i * size_in) // size_out, math.ceil((i + 1) * size_in / size_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class PoolAsMatmul(nn.Module):
    def __init__(self, rows: torch.Tensor, cols: torch.Tensor):
        super().__init__()
        # plain attributes, not buffers: they become graph constants and stay out of state_dict
        self.rows, self.cols_t = rows, cols.t().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows.to(x), x), self.cols_t.to(x))


def _pair(size, like: tuple[int, int]) -> tuple[int, int]:
    size = (size, size) if isinstance(size, int) else tuple(size)
    return tuple(like[i] if s is None else int(s) for i, s in enumerate(size))


@contextlib.contextmanager
def exportable_adaptive_pools(model: nn.Module, example: torch.Tensor) -> Iterator[int]:
    """Within the block, AdaptiveAvgPool2d layers that the exporter refuses are MatMul pairs.

    Yields how many layers were swapped. One forward of `example` finds each layer's input size.
    """
    pools = {name: m for name, m in model.named_modules() if type(m) is nn.AdaptiveAvgPool2d
             and _pair(m.output_size, (1, 1)) != (1, 1)}
    if not pools:
        yield 0
        return
    seen: dict[str, tuple[int, int]] = {}

    def record(name):
        def hook(_mod, inputs):
            seen.setdefault(name, tuple(inputs[0].shape[-2:]))  # returns None: the input is left as is
        return hook

    hooks = [m.register_forward_pre_hook(record(name)) for name, m in pools.items()]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    swapped = []
    for name, pool in pools.items():
        if name not in seen:
            continue
        h_in, w_in = seen[name]
        h_out, w_out = _pair(pool.output_size, (h_in, w_in))
        if h_in % h_out == 0 and w_in % w_out == 0:
            continue  # the exporter writes these as AveragePool
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, PoolAsMatmul(averaging_matrix(h_in, h_out), averaging_matrix(w_in, w_out)))
        swapped.append((parent, attr, pool))
    try:
        yield len(swapped)
    finally:
        for parent, attr, pool in swapped:
            setattr(parent, attr, pool)
