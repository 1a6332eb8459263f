"""Trained weights from files: a state dict of a registry network or of the user's own class, checked
against the module it must fit (compress.stages.import_weights makes a model directory of them).

Weights are read with safetensors, or with ``torch.load(..., weights_only=True)`` for ``.pt``, ``.pth``,
``.pth.tar``, ``.bin`` and ``.ckpt`` files, which refuses anything but tensors, plain containers and
argparse's Namespace: nothing a user hands us is unpickled.
"""

from __future__ import annotations

import argparse
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from a training checkpoint's dict when needed."""
    from compress.limits import regular_file

    path = Path(path)
    try:
        size = regular_file(path, "weights file").st_size  # a folder, a FIFO or a device, refused by kind
    except FileNotFoundError:
        raise CompressError(f"weights file not found: {path}") from None
    if size == 0:
        raise CompressError(f"{path} is empty")
    suffix = ".pth" if path.name.lower().endswith(".pth.tar") else path.suffix.lower()  # timm's checkpoint names
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from compress.weights_file import check_header

        check_header(path)  # a name listed twice would load one of two tensors without a word
        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CompressError(f"{path} is not a readable safetensors file: {_first(exc)}") from None
    elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
        _check_zip_entries(path)
        try:
            # argparse.Namespace (the `args` timm and many training scripts save beside the weights) only sets
            # attributes: allowed to the weights-only reader, which still refuses any other object.
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - corrupt zips, pickles with code, truncated files
            raise CompressError(f"{path} cannot be read as a weights-only checkpoint "
                                f"(pickled code is refused): {_unpickling_cause(exc)}") from None
    else:
        raise CompressError(f"{path}: weights must be .safetensors, .pt, .pth or .pth.tar")
    return _unwrap(state, path)


def _check_zip_entries(path: Path) -> None:
    """torch.save writes its zip stored, never deflated; the reader would inflate a deflated entry all the
    same, so a stranger's small file could ask for a thousand times its size. Refuse those, and bound what
    the entries hold, before torch.load reads any."""
    import zipfile

    from compress.limits import check_allocation

    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # how torch tells its zip format from the legacy one
            # The legacy format's pickle declares each storage's size and torch allocates that before reading
            # the bytes: a 1.6 MB file asked for 17 GB. Its sizes cannot be bounded without unpickling.
            raise CompressError(f"{path} is not in torch.save's zip format (torch >= 1.6); the legacy format "
                                "declares storage sizes that cannot be checked before torch allocates them: "
                                "re-save it with a current torch.save, or as .safetensors")
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(size - 22, 0))
        end = f.read(22)
    # torch.save ends the file with the 22-byte end record and no comment. Python's zipfile and torch's reader
    # (miniz) search for that record differently, so any other ending lets them read different directories:
    # 8 bytes appended to a deflated checkpoint hid it from zipfile.is_zipfile, and torch inflated it.
    if len(end) < 22 or end[:4] != b"PK\x05\x06" or end[20:22] != b"\x00\x00":
        raise CompressError(f"{path} starts as a zip checkpoint but does not end as torch.save ends one (trailing "
                            "bytes, a comment or a truncated file); save it again with torch.save")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CompressError(f"{path} cannot be read as a weights-only checkpoint: {_first(exc)}") from None
    packed = next((e for e in entries if e.compress_type != zipfile.ZIP_STORED), None)
    if packed is not None:
        raise CompressError(f"{path}: entry {packed.filename!r} is compressed, which torch.save never writes; "
                            "refusing to inflate it (save the checkpoint again with torch.save)")
    check_allocation(sum(e.file_size for e in entries), "uint8", f"{path} (its entries)")


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
    odd = next((k for k in state if not isinstance(k, str)), None)
    if odd is not None:
        raise CompressError(f"{path}: key {odd!r} is a {type(odd).__name__}, not a tensor name")
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CompressError(f"{path}: entry {bad!r} is a {type(state[bad]).__name__}, not a tensor")
    for key, t in state.items():
        if t.layout != torch.strided:
            raise CompressError(f"{path}: tensor {key!r} is {t.layout}, not a dense tensor; save it with .to_dense()")
        # A stride-0 tensor of 4 stored bytes can claim any shape, and a class count or a Linear is made of
        # its shape: no tensor may claim more elements than the file stored for it.
        if t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise CompressError(f"{path}: tensor {key!r} claims {list(t.shape)} ({t.numel():,} values) over "
                                f"{t.untyped_storage().nbytes():,} stored bytes; save plain tensors (.contiguous())")
    return dict(state)


def fitted_keys(state: dict[str, torch.Tensor], expected: dict) -> dict[str, torch.Tensor]:
    """`state` under the model's names: as it is when they match, else with the wrappers' prefixes that every
    key shares stripped, however nested (DistributedDataParallel around torch.compile: module._orig_mod.).
    A model whose own names all begin with module. keeps them."""
    names = {k for k in expected if not k.endswith("num_batches_tracked")}
    for _ in range(4):
        if names <= set(state) or not state:
            return state
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            return state
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def fits(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    """Whether load_strict would take `state` into `model`."""
    try:
        _fitted(model.state_dict(), state, "", "")
    except CompressError:
        return False
    return True


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """Load `state` into `model`, or fail on the first tensor that does not fit, by name. A BatchNorm's
    num_batches_tracked, which checkpoints from before PyTorch 0.4.1 lack, is taken from the model."""
    expected = model.state_dict()
    state = _fitted(expected, state, source, arch)
    # The module versions are the model's own: a file's `_metadata` is a stranger's word that drives torch's
    # loaders (MNASNet rebuilds its stem for version 1), and MNASNet refuses a state dict without any.
    converted = OrderedDict((k, v.to(expected[k].dtype)) for k, v in state.items())
    converted._metadata = getattr(expected, "_metadata", None)
    model.load_state_dict(converted, strict=True)


def _fitted(expected: dict, state: dict[str, torch.Tensor], source: str, arch: str) -> dict[str, torch.Tensor]:
    """`state` under the model's names with its missing counters filled, once every tensor fits."""
    state = fitted_keys(state, expected)
    state = {**state, **{k: v for k, v in expected.items() if k.endswith("num_batches_tracked") and k not in state}}
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
    return state


def output_width(state: dict[str, torch.Tensor]) -> int | None:
    """Rows of the last 2-D weight in the file: the class count of a classifier, bounded before anything is
    made of it (a stride-0 tensor of a kilobyte can claim any shape)."""
    from compress.limits import MAX_CLASSES, check_count

    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    if not last:
        return None
    check_count(int(last[-1].shape[0]), MAX_CLASSES, "the class count the weights file's last layer gives",
                "MAX_CLASSES")
    return int(last[-1].shape[0])


def check_statistics(model: nn.Module, source: str) -> None:
    """A BatchNorm whose running variance plus eps is not positive divides by the square root of a negative:
    every output NaN, refused by name rather than as "the output holds NaN"."""
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            bad = int((m.running_var + m.eps <= 0).sum())
            if bad:
                raise CompressError(f"{source}: tensor {name}.running_var holds {bad} negative variance(s); a "
                                    "BatchNorm's running variance is never below zero")


@torch.no_grad()
def logits_width(model: nn.Module, input_size: int) -> int:
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


def _unpickling_cause(exc: BaseException) -> str:
    """torch's weights-only refusal says what it refused several lines down ("Unsupported global: GLOBAL
    x.y"), after advice to load with weights_only=False, which this toolkit never does."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if found:
        return (f"it holds a {found.group(1)} object; save the state dict alone "
                "(torch.save(model.state_dict(), path))")
    return re.sub(r"\x1b\[[0-9;]*m", "", _first(exc))


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
