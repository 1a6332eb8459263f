"""Model directories from trained weights: a state dict of a registry network or of the user's own class.

Weights are read with safetensors, or with ``torch.load(..., weights_only=True)`` for ``.pt``/``.pth``
files, which refuses anything but tensors and plain containers: nothing a user hands us is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from a training checkpoint's dict when needed."""
    path = Path(path)
    if not path.is_file():
        raise CompressError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CompressError(f"{path} is not a readable safetensors file: {_first(exc)}") from None
    elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - corrupt zips, pickles with code, truncated files
            raise CompressError(f"{path} cannot be read as a weights-only checkpoint "
                                f"(pickled code is refused): {_first(exc)}") from None
    else:
        raise CompressError(f"{path}: weights must be .safetensors, .pt or .pth")
    return _unwrap(state, path)


def _unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            break
        if isinstance(state, dict):
            inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is not None:
                state = inner
                continue
        kind = type(state).__name__
        keys = ", ".join(list(state)[:5]) if isinstance(state, dict) else ""
        raise CompressError(f"{path} holds no state dict (a {kind}{' with keys ' + keys if keys else ''}); "
                            f"save model.state_dict(), or wrap it under one of {', '.join(WRAPPER_KEYS)}")
    if not (isinstance(state, dict) and state):
        raise CompressError(f"{path} holds no tensors")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CompressError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        for prefix in PREFIXES:
            if key.startswith(prefix) and all(k.startswith(prefix) for k in state):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """Load `state` into `model`, or fail on the first tensor that does not fit, by name."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CompressError(f"{source} does not fit {arch}: tensor {key} {list(tensor.shape)} is missing")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CompressError(f"{source} does not fit {arch}: tensor {key} is {list(state[key].shape)} in the "
                                f"file and {list(tensor.shape)} in the model")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CompressError(f"{source} does not fit {arch}: tensor {extra[0]} {list(state[extra[0]].shape)} is "
                            f"not in the model ({len(extra)} unexpected)")
    for key, value in state.items():
        if value.is_floating_point() != expected[key].is_floating_point():
            raise CompressError(f"{source}: tensor {key} is {value.dtype}, the model holds {expected[key].dtype}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def output_width(state: dict[str, torch.Tensor]) -> int | None:
    """Rows of the last 2-D weight in the file: the class count of a classifier."""
    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(last[-1].shape[0]) if last else None


def import_weights(weights: str | Path, arch: str, out: str | Path, *, arch_kwargs: dict | None = None,
                   input_size: int | None = None, classes: list[str] | None = None, data=None,
                   mean: list[float] | None = None, std: list[float] | None = None, device=None) -> dict:
    """Make a model directory from a trained state dict.

    `arch` is a registry name or ``package.module:Class``; ``num_classes`` goes to the constructor when
    it takes one and `arch_kwargs` does not set it. Class names come from `data` (a
    :class:`compress.pipeline.DataOptions`) or `classes`; normalization from `mean`/`std`, or is measured
    on `data`'s training split. With `data`, the test accuracy is recorded.
    """
    from compress.pipeline import writing

    with writing(out, [("WEIGHTS", weights)], data):
        return _import_weights(weights, arch, out, arch_kwargs=arch_kwargs, input_size=input_size, classes=classes,
                               data=data, mean=mean, std=std, device=device)


def _import_weights(weights, arch, out, *, arch_kwargs, input_size, classes, data, mean, std, device) -> dict:
    from compress.artifact import save_model_dir
    from compress.pipeline import command_line, model_kwargs

    arch_kwargs = dict(arch_kwargs or {})
    state = read_state_dict(weights)
    train = test = None
    if data is not None:
        if input_size is not None and getattr(data, "input_size", None) is None:
            data.input_size = input_size
        train, test = data.split("train"), data.split("test")
        if classes is not None and list(classes) != list(train.classes):
            raise CompressError("--classes disagree with the dataset's class folders")
        classes = list(train.classes)
        if input_size is None:
            input_size = int(train.input_size[-1])
    if classes is None:
        width = output_width(state)
        if width is None:
            raise CompressError("give the class names (--classes a,b,... or --data)")
        classes = [f"class{i}" for i in range(width)]
    if input_size is None:
        raise CompressError("give --input-size (or --data, whose images set it)")
    if (mean is None) != (std is None):
        raise CompressError("give both --mean and --std, or neither")
    if mean is None:
        if train is None:
            raise CompressError("give --mean and --std, or --data to measure them on the training images")
        mean, std = train.channel_stats()
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise CompressError("--mean and --std take three values each, std > 0")
    kwargs = model_kwargs(arch, arch_kwargs, len(classes), input_size)
    from compress.artifact import construct

    model = construct(arch, kwargs)
    load_strict(model, state, str(weights), arch)
    check_input_size(model, arch, input_size)
    out_width = _logits_width(model, input_size)
    if out_width != len(classes):
        raise CompressError(f"{arch} outputs {out_width} classes, but {len(classes)} class names were given")
    accuracy = None
    if test is not None:
        from compress.train import evaluate, pick_device

        accuracy = evaluate(model, test, mean, std, device=pick_device(device))["accuracy"]
        model.cpu()
    meta = {"arch": arch, "arch_kwargs": kwargs, "classes": classes, "input_size": [3, input_size, input_size],
            "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
            "accuracy": accuracy, "imported_from": {"path": str(weights)}, "command": command_line()}
    if data is not None:
        meta["data"] = data.describe()
    return save_model_dir(model, out, meta)


@torch.no_grad()
def _logits_width(model: nn.Module, input_size: int) -> int:
    model.eval()
    return int(model(torch.zeros(1, 3, input_size, input_size)).shape[-1])


@torch.no_grad()
def check_input_size(model: nn.Module, arch: str, input_size: int) -> None:
    model.eval()
    try:
        out = model(torch.zeros(2, 3, input_size, input_size))
    except Exception as exc:  # noqa: BLE001 - any failure of the user's forward means the same here
        raise CompressError(f"{arch} cannot take {input_size}x{input_size} inputs: {_first(exc)}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise CompressError(f"{arch} must return a (batch, classes) tensor of logits, got "
                            f"{type(out).__name__}{list(out.shape) if isinstance(out, torch.Tensor) else ''}")


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
