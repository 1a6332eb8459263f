"""The logits in a classifier's forward output.

Most classifiers return one batch × classes tensor. An ultralytics classifier (YOLOv8-cls, YOLO11-cls) returns
logits in training but the pair (probabilities, logits) in eval mode. The pair is accepted only when its first
tensor is, row by row, the softmax of its second; any other output is refused rather than guessed at.
"""

from __future__ import annotations

import copy

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
    """Refuse, before any training, a model whose eval-mode output holds no logits (a detector, a feature
    extractor), whose training-mode forward fails or returns more than logits (an auxiliary classifier), or a
    teacher without logits: each would otherwise stop the run at its first step or after its first epoch."""
    if len(data) == 0:
        return
    x, _ = next(iter(data.subset(list(range(min(2, len(data))))).batches(2, mean, std, train=False)))
    for net, what in ((model, "the model"), (teacher, "the teacher")):
        if net is not None:
            _forward_checked(net, x, what, training=False)
    if len(x) == 2:  # training-mode BN needs two images; on a copy, so that no statistic moves
        try:
            twin = copy.deepcopy(model)
        except Exception:  # noqa: BLE001 - a model holding a lock or a handle: its first step checks it instead
            return
        _forward_checked(twin, x, "the model in training mode", training=True)


def _forward_checked(net: nn.Module, x: torch.Tensor, what: str, *, training: bool) -> None:
    was_training = net.training
    device = next(net.parameters(), torch.empty(0)).device
    aux = [n for n, _ in net.named_modules() if "aux" in n.rsplit(".", 1)[-1].lower()]
    hint = (f" (auxiliary classifiers {', '.join(aux[:2])}? turn them off: torchvision's model.aux_logits = False, "
            "with those modules set to None)") if aux and training else ""
    net.train(training)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            try:
                output = net(x.to(device))
            except Exception as exc:  # noqa: BLE001 - any failure of the user's forward, named in one line
                first = (str(exc).strip().splitlines() or [""])[0]
                raise CompressError(f"{what} fails on {len(x)} images of the data ({type(exc).__name__}: "
                                    f"{first[:200]}){hint}") from None
            try:
                logits_of(output, what)
            except CompressError as exc:
                raise CompressError(f"{exc}{hint}") from None
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
        z, p = logits[rows].float(), probs[rows].float()
        if z.numel() == 0:
            return True
        tolerance = SOFTMAX_TOLERANCE.get(probs.dtype, LOW_PRECISION_TOLERANCE)
        gap = (p - z.softmax(1)).abs().max()
        sums = (p.sum(1) - 1).abs().max()
        # the logits' top class is a top class of the probabilities: accuracy from either is the same
        top = bool((p.gather(1, z.argmax(1, keepdim=True)).squeeze(1) >= p.max(1).values).all())
        return bool(gap <= tolerance and sums <= max(tolerance, 1e-4) and top)


def _shape_of(output) -> str:
    if isinstance(output, torch.Tensor):
        return f"{output.dtype} {list(output.shape)}"
    if isinstance(output, (tuple, list)):
        parts = ", ".join(_shape_of(o) if isinstance(o, torch.Tensor) else type(o).__name__ for o in output[:4])
        return f"a {type(output).__name__} of {len(output)} ({parts}{', ...' if len(output) > 4 else ''})"
    return type(output).__name__
