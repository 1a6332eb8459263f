"""model.safetensors read and written with the checks safetensors leaves to us.

safetensors parses its JSON header into a map, so a tensor name listed twice with the same offsets is
silently merged into one; here the header is read first and such a file refused. Non-finite weights (NaN,
±Inf) are refused both when a model directory is written and when one is read, naming the first tensor:
such a network reports a chance accuracy as "ok" and trains at loss NaN.
"""

from __future__ import annotations

import collections
import json
import struct
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from compress.errors import CompressError
from compress.limits import regular_file

# safetensors' own limit on the header size
MAX_HEADER = 100_000_000


def check_header(path: str | Path) -> dict:
    """The header of a safetensors file, refused when it is truncated, oversized or lists a name twice."""
    path = Path(path)
    size = regular_file(path).st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CompressError(f"{path} is corrupt: shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or n > size - 8:
            raise CompressError(f"{path} is corrupt: its header claims {n} bytes (file {size} bytes, limit "
                                f"{MAX_HEADER})")
        raw = fh.read(n)
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        raise CompressError(f"{path} is corrupt: its header lists tensor {exc.name!r:.80} twice") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompressError(f"{path} is corrupt: its header is not JSON ({exc})") from None
    except RecursionError:
        raise CompressError(f"{path} is corrupt: its header is nested too deeply") from None


class _Duplicate(ValueError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def first_nonfinite(state: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or ±Inf, or None."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and not bool(
                torch.isfinite(t).all()):
            return name
    return None


def check_finite(state: Mapping[str, torch.Tensor], where: str) -> None:
    name = first_nonfinite(state)
    if name is not None:
        t = state[name]
        bad = int((~torch.isfinite(t)).sum())
        raise CompressError(f"{where}: tensor {name} holds {bad} non-finite value(s) (NaN or Inf); a network "
                            "with them computes nothing meaningful")


def refuse_nonfinite(model: nn.Module) -> None:
    """Refuse a model to prune whose weights or BN statistics hold NaN or Inf: every output is then NaN, a
    self-check compares nothing and passes, and a threshold over a NaN γ means nothing."""
    tensors = {**dict(model.named_parameters()),
               **{n: b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))}}
    name = first_nonfinite(tensors)
    if name is not None:
        raise CompressError(f"{type(model).__name__}.{name} holds NaN or Inf values; a network with them computes "
                            "nothing meaningful, so its pruning cannot be checked (the model is left unchanged)")


def read_weights(path: str | Path, model: nn.Module, device: str | torch.device = "cpu",
                 where: str | None = None) -> None:
    """Load a model.safetensors into `model` strictly, after checking its header, every tensor's name, dtype
    and shape, and that every value is finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_header(path)
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CompressError(f"{path} is corrupt: {first[:200]}") from None
    load_state(model, state, str(path), where)


def load_state(model: nn.Module, state: dict, source: str, where: str | None = None) -> None:
    """Load `state` (read from `source`) into `model` strictly, after checking every tensor's name, dtype and
    shape against the model and that every value is finite; a mismatch is one line naming `source`."""
    from compress.validate import check_state

    expected = model.state_dict()
    check_state(state, expected, source)
    check_finite(state, source)
    # safetensors keeps tensors, not the per-module versions a state dict carries in `_metadata`; modules
    # that migrate old checkpoints by version (torchvision's MNASNet) refuse a state without one. The
    # weights were saved from this architecture, so its own versions are the right ones.
    state = collections.OrderedDict(state)
    state._metadata = getattr(expected, "_metadata", None)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        lines = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in lines[1:] if ln.strip()), lines[0] if lines else "")
        raise CompressError(f"{source} does not fit {where or 'the model'}: {detail}") from None
