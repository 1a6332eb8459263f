"""The logits in a classifier's forward output.

Most classifiers return one batch × classes tensor. An ultralytics classifier (YOLOv8-cls, YOLO11-cls) returns
logits in training but the pair (probabilities, logits) in eval mode. The pair is accepted only when its first
tensor is, row by row, the softmax of its second; any other output is refused rather than guessed at.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import CompressError

# How far the probabilities of a pair may sit from the softmax of its logits: float32 rounding, and the
# rounding of probabilities computed in bf16 or fp16 autocast.
SOFTMAX_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-9}
LOW_PRECISION_TOLERANCE = 1e-2


def logits_of(output, what: str = "the model") -> torch.Tensor:
    """The batch × classes float logits in `output`, else CompressError naming what it returned."""
    if isinstance(output, torch.Tensor):
        return _checked(output, what)
    if _is_probability_pair(output):
        return output[1]
    raise CompressError(f"{what} returns {_shape_of(output)}, not one batch × classes tensor of float logits"
                        f"{' (nor the pair of their softmax and them)' if isinstance(output, (tuple, list)) else ''}; "
                        "accuracy and the classification loss are measured on such classifiers only")


def check_classifier(model: nn.Module, data, mean, std, *, teacher: nn.Module | None = None) -> None:
    """Refuse, before any training, a model (or teacher) whose eval-mode output holds no logits, such as a
    detector or a feature extractor: `evaluate` would refuse it only after the first epoch."""
    if len(data) == 0:
        return
    x, _ = next(iter(data.subset(list(range(min(2, len(data))))).batches(2, mean, std, train=False)))
    for net, what in ((model, "the model"), (teacher, "the teacher")):
        if net is None:
            continue
        was_training = net.training
        device = next(net.parameters(), torch.empty(0)).device
        net.eval()
        try:
            with torch.no_grad():
                logits_of(net(x.to(device)), what)
        finally:
            net.train(was_training)


def _checked(logits: torch.Tensor, what: str) -> torch.Tensor:
    if logits.dim() != 2 or not logits.is_floating_point():
        raise CompressError(f"{what} returns {_shape_of(logits)}, not one batch × classes tensor of float logits; "
                            "accuracy and the classification loss are measured on such classifiers only")
    return logits


def _is_probability_pair(output) -> bool:
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        return False
    probs, logits = output
    if not (isinstance(probs, torch.Tensor) and isinstance(logits, torch.Tensor)) or probs.shape != logits.shape \
            or logits.dim() != 2 or not (probs.is_floating_point() and logits.is_floating_point()):
        return False
    with torch.no_grad():
        rows = torch.isfinite(logits).all(1)  # NaN logits are the caller's to count and refuse, not a mismatch
        expected = logits[rows].float().softmax(1)
        tolerance = SOFTMAX_TOLERANCE.get(probs.dtype, LOW_PRECISION_TOLERANCE)
        gap = (probs[rows].float() - expected).abs()
        return bool(gap.numel() == 0 or gap.max() <= tolerance)


def _shape_of(output) -> str:
    if isinstance(output, torch.Tensor):
        return f"{output.dtype} {list(output.shape)}"
    if isinstance(output, (tuple, list)):
        parts = ", ".join(_shape_of(o) if isinstance(o, torch.Tensor) else type(o).__name__ for o in output[:4])
        return f"a {type(output).__name__} of {len(output)} ({parts}{', ...' if len(output) > 4 else ''})"
    return type(output).__name__
