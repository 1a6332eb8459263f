"""Top-1 accuracy of an artifact on uint8 images, preprocessed with the artifact's own mean/std."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 N×C×H×W → float32 (x / 255 - mean) / std per channel."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {images.shape}")
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != images.shape[1] or std.shape[1] != images.shape[1]:
        raise ValueError(f"mean/std have {mean.shape[1]}/{std.shape[1]} values for {images.shape[1]} channels")
    return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def runner_accuracy(runner, images: np.ndarray, labels: np.ndarray, batch_size: int = 250) -> dict:
    """Accuracy of a runner on uint8 images; normalization comes from runner.metadata (mean, std)."""
    meta = runner.metadata or {}
    if "mean" not in meta or "std" not in meta:
        raise ValueError(f"{runner.path.name} carries no normalization (compress.mean / compress.std); "
                         "cannot preprocess images for it")
    labels = np.asarray(labels).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if runner.input_shape is not None and tuple(images.shape[1:]) != tuple(runner.input_shape):
        raise ValueError(f"images are {list(images.shape[1:])}, {runner.path.name} takes {list(runner.input_shape)}")
    classes = meta.get("classes")
    correct = 0
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size], meta["mean"], meta["std"])
        logits = runner.infer(x)
        if classes is not None and logits.shape[-1] != len(classes):
            raise ValueError(f"{runner.path.name} outputs {logits.shape[-1]} logits for {len(classes)} classes")
        correct += int((logits.argmax(axis=-1) == labels[i:i + batch_size]).sum())
    n = len(labels)
    return {"accuracy": correct / n if n else None, "correct": correct, "images": n}


def onnx_accuracy(path: str | Path, images: np.ndarray, labels: np.ndarray, batch_size: int = 250,
                  backend: str = "ort-cpu") -> dict:
    """Accuracy of an ONNX file in ONNX Runtime (used by `compress eval MODEL.onnx`)."""
    from compress.runtime.ort_runner import OrtRunner

    with OrtRunner(path, backend=backend) as runner:
        return runner_accuracy(runner, images, labels, batch_size)
