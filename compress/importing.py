"""Trained weights from files: a state dict of a registry network or of the user's own class, checked
against the module it must fit (compress.stages.import_weights makes a model directory of them).

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
        _check_zip_entries(path)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - corrupt zips, pickles with code, truncated files
            raise CompressError(f"{path} cannot be read as a weights-only checkpoint "
                                f"(pickled code is refused): {_first(exc)}") from None
    else:
        raise CompressError(f"{path}: weights must be .safetensors, .pt or .pth")
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
    out = {}
    shared = [p for p in PREFIXES if all(k.startswith(p) for k in state)]  # once, not once per key
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CompressError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        for prefix in PREFIXES:
            if prefix in shared and key.startswith(prefix):
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


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
