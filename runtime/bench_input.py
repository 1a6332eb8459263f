"""The input every benchmark times: random uint8 images of the artifact's input size, normalized as its metadata
says, the same for every artifact (a fixed seed), its size bounded before it is allocated."""

from __future__ import annotations

import numpy as np

from compress.runtime.accuracy import normalize

INPUT_SEED = 0
# The random input of one timed batch is allocated before the run; its size is bounded first.
MAX_INPUT_BYTES = 4 * 1024**3


def benchmark_input(runner, batch: int) -> np.ndarray:
    """`batch` images for `runner`, normalized; ValueError when its input size is unknown or too large."""
    if runner.input_shape is None:
        raise ValueError(f"{runner.path.name}: input size unknown (no static shape, no compress.input_size)")
    nbytes = 4 * batch * int(np.prod(runner.input_shape, dtype=np.int64))
    if nbytes > MAX_INPUT_BYTES:
        raise ValueError(f"batch {batch} of {list(runner.input_shape)} inputs needs {nbytes / 2**30:.1f} GiB, above "
                         f"the bound of {MAX_INPUT_BYTES / 2**30:.0f} GiB for one timed batch")
    meta = runner.metadata or {}
    channels = runner.input_shape[0]
    mean = meta.get("mean") or [0.5] * channels
    std = meta.get("std") or [0.25] * channels
    images = np.random.default_rng(INPUT_SEED).integers(0, 256, size=(batch, *runner.input_shape), dtype=np.uint8)
    return normalize(images, mean, std)
