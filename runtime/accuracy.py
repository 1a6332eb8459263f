"""Top-1 accuracy of an artifact on uint8 images, preprocessed with the artifact's own mean/std.

Accuracy is a classifier's figure: the model must return one 2-D output (batch × classes) whose width
is the class count its metadata names, or the pair (probabilities, logits) of an ultralytics classifier,
whose first output is checked to be the softmax of its second. A detector or any other multi-output model is
refused (`NotAClassifierError`), and so are logits holding NaN or infinity (`NonFiniteOutputError`), since
argmax over them would still "pick" a class and report a plausible-looking accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.runtime.errors import ArtifactError, NonFiniteOutputError, NotAClassifierError

# How far a (probabilities, logits) pair's first output may sit from the softmax of its second: the rounding of
# an fp16 or int8 engine's outputs, while probabilities of anything else sit much further off.
PAIR_TOLERANCE = 1e-2


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 N×C×H×W → float32 (x / 255 - mean) / std per channel."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {images.shape}")
    mean = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != images.shape[1] or std.shape[1] != images.shape[1]:
        raise ValueError(f"mean/std have {mean.shape[1]}/{std.shape[1]} values for {images.shape[1]} channels")
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        out = ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    if not np.isfinite(out).all():
        # Finite metadata can still overflow float32 (a std of 1e-45, a mean of 1e38): the model would be
        # blamed for the NaN outputs of an input that was never finite.
        raise ValueError(f"the normalization (mean {mean.ravel().tolist()}, std {std.ravel().tolist()}) makes "
                         "the input infinite in float32; the artifact's compress.mean/std are not usable")
    return out


def classifier_problem(output_shapes: list[tuple[int, ...]], num_classes: int | None) -> str | None:
    """Why outputs of these shapes (batch first) are not a classifier's over `num_classes`; None if they are."""
    if num_classes is None:
        return "it names no classes (compress.classes), so its output cannot be checked against a class count"
    shape_problem = not_a_classifier(output_shapes)
    if shape_problem:
        return shape_problem
    logits = int(output_shapes[-1][1])
    if logits != num_classes:
        return f"it outputs {logits} logits for {num_classes} classes"
    return None


def not_a_classifier(output_shapes: list[tuple[int, ...]]) -> str | None:
    """Why outputs of these shapes (batch first) are no classifier's at all, whatever the class count."""
    if len(output_shapes) == 2 and tuple(output_shapes[0]) == tuple(output_shapes[1]):
        output_shapes = output_shapes[1:]  # (probabilities, logits): logits_in checks their values
    if len(output_shapes) != 1:
        return (f"it returns {len(output_shapes)} outputs; accuracy is measured on classifiers (one output, or "
                "probabilities and logits)")
    shape = tuple(output_shapes[0])
    if len(shape) != 2:
        return f"its output is {' x '.join(['N', *map(str, shape[1:])])}; a classifier's is N x classes"
    return None


def logit_count(output_shapes: list[tuple[int, ...]]) -> int | None:
    """The number of logits per image of a classifier's outputs; None for outputs no classifier has."""
    return None if not_a_classifier(output_shapes) else int(output_shapes[-1][1])


def logits_in(outputs: list[np.ndarray]) -> np.ndarray | None:
    """The logits among a model's outputs: its only output, or the second of two whose first is, row by row,
    the softmax of the second (an ultralytics classifier in eval mode); None for any other outputs."""
    if len(outputs) == 1:
        return outputs[0]
    if len(outputs) == 2 and is_probability_pair(*outputs):
        return outputs[1]
    return None


def is_probability_pair(probs: np.ndarray, logits: np.ndarray) -> bool:
    """Whether `probs` is softmax(`logits`) over axis 1, on the rows whose logits are finite (those that are not
    are the caller's to refuse): each row sums to 1 and sits within PAIR_TOLERANCE of the softmax, and the
    logits' top class is a top class of the probabilities, so that accuracy from either is the same."""
    probs, logits = np.asarray(probs), np.asarray(logits)
    if probs.shape != logits.shape or logits.ndim != 2 or probs.dtype.kind != "f" or logits.dtype.kind != "f":
        return False
    rows = np.isfinite(logits).all(axis=1)
    x, p = logits[rows].astype(np.float64), probs[rows].astype(np.float64)
    if x.size == 0:
        return True
    e = np.exp(x - x.max(axis=1, keepdims=True))
    gap = np.abs(p - e / e.sum(axis=1, keepdims=True))
    sums = np.abs(p.sum(axis=1) - 1)
    top = p[np.arange(len(p)), x.argmax(axis=1)] >= p.max(axis=1)
    return bool(gap.max() <= PAIR_TOLERANCE and sums.max() <= PAIR_TOLERANCE and top.all())  # NaN: no pair


def nonfinite_outputs(outputs: list[np.ndarray], names: list[str]) -> list[str]:
    """Names of the floating-point outputs holding a NaN or an infinity."""
    return [name for name, o in zip(names, outputs)
            if np.asarray(o).dtype.kind in "fc" and not np.isfinite(o).all()]


def runner_accuracy(runner, images: np.ndarray, labels: np.ndarray, batch_size: int = 250,
                    num_classes: int | None = None) -> dict:
    """Accuracy of a runner on uint8 images; normalization comes from runner.metadata (mean, std), the class
    count from its metadata's classes (else `num_classes`, the dataset's)."""
    meta = runner.metadata or {}
    name = runner.path.name
    if "mean" not in meta or "std" not in meta:
        raise ValueError(f"{name} carries no normalization (compress.mean / compress.std); "
                         "cannot preprocess images for it")
    labels = np.asarray(labels).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if runner.input_shape is not None and tuple(images.shape[1:]) != tuple(runner.input_shape):
        raise ValueError(f"images are {list(images.shape[1:])}, {name} takes {list(runner.input_shape)}")
    classes = meta.get("classes")
    count = len(classes) if classes else num_classes
    if count is not None and len(labels) and (labels.min() < 0 or labels.max() >= count):
        raise ValueError(f"labels run from {labels.min()} to {labels.max()}, {name} has {count} classes")
    correct = 0
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size], meta["mean"], meta["std"])
        outs = runner.infer_all(x)
        problem = classifier_problem([o.shape for o in outs], count)
        if problem:
            raise NotAClassifierError(f"no accuracy for {name}: {problem}")
        logits = logits_in(outs)
        if logits is None:
            raise NotAClassifierError(f"no accuracy for {name}: its first output is not the softmax of its second, "
                                      "so they are not a classifier's probabilities and logits")
        if len(logits) != len(x):  # one answer broadcast against every label would look like a score
            raise ArtifactError(f"{name} returns {len(logits)} rows of logits for {len(x)} images")
        bad = ~np.isfinite(logits).all(axis=1)
        if bad.any():
            raise NonFiniteOutputError(f"{name} outputs NaN or infinite logits for {int(bad.sum())} of {len(x)} "
                                       f"images (from image {i + int(np.argmax(bad))}); no accuracy is reported "
                                       "from a broken model")
        correct += int((logits.argmax(axis=-1) == labels[i:i + batch_size]).sum())
    n = len(labels)
    return {"accuracy": correct / n if n else None, "correct": correct, "images": n}


def onnx_accuracy(path: str | Path, images: np.ndarray, labels: np.ndarray, batch_size: int = 250,
                  backend: str = "ort-cpu") -> dict:
    """Accuracy of an ONNX file in ONNX Runtime (used by `compress eval MODEL.onnx`)."""
    from compress.runtime.ort_runner import OrtRunner

    with OrtRunner(path, backend=backend) as runner:
        return runner_accuracy(runner, images, labels, batch_size)
