"""Resumable training state: weights, momentum and the best epoch's weights under epoch-numbered names, then
state.json naming them.

A kill at any point leaves the previous state.json pointing at files that still exist, so a re-run
continues from the last saved epoch (on the same machine or another).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from torch import nn

from compress.atomic import atomic_path, write_json
from compress.data.fingerprint import as_recorded
from compress.errors import CompressError
from compress.restart import restart_advice

STATE_DIR = "train_state"


def finish(out_dir: str | Path) -> None:
    """Drop resumable state once the final model directory is written."""
    shutil.rmtree(Path(out_dir) / STATE_DIR, ignore_errors=True)


def save_weights(state: dict[str, torch.Tensor] | nn.Module, path: Path) -> None:
    """A model's (or a state dict's) tensors as safetensors, written atomically."""
    from safetensors.torch import save_file

    if isinstance(state, nn.Module):
        state = state.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def is_state_file(name: str) -> bool:
    """The names saved state is written under (for removing what a killed writer left of them)."""
    return name == "state.json" or re.fullmatch(r"(?:model|optimizer|best)-[0-9]{1,9}\.safetensors", name) is not None


def state_tag(state_dir: Path) -> str | None:
    try:
        return json.loads((state_dir / "state.json").read_text()).get("tag")
    except (OSError, ValueError, AttributeError):
        return None


def state_settings(state_dir: Path) -> dict | None:
    """The settings the saved state was trained with (None when it recorded none: an older version)."""
    try:
        settings = json.loads((state_dir / "state.json").read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return None
    return settings if isinstance(settings, dict) else None


def save_state(state_dir: Path, model, optimizer, epoch: int, best, history, tag=None, settings=None,
               best_weights: dict | None = None) -> None:
    """Weights and momentum buffers of `epoch` (and the best epoch's weights when they are new), then
    state.json naming them; older files go last. The best weights live here, named by state.json, so that
    a kill cannot leave a best.safetensors of an epoch the state does not know (see publish_best)."""
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    if best_weights is not None:
        best_file = f"best-{epoch}.safetensors"
        save_weights(best_weights, state_dir / best_file)
    else:
        best_file = _best_file(state_dir)
    save_weights(model, state_dir / f"model-{epoch}.safetensors")
    params = list(model.parameters())
    buffers = {}
    for i, p in enumerate(params):
        st = optimizer.state.get(p, {})
        if "momentum_buffer" in st and st["momentum_buffer"] is not None:
            buffers[f"momentum.{i}"] = st["momentum_buffer"].detach().cpu().contiguous()
    with atomic_path(state_dir / f"optimizer-{epoch}.safetensors") as tmp:
        save_file(buffers, str(tmp))
    write_json(state_dir / "state.json", {"epoch": epoch, "best": best, "history": history,
                                          "num_params": len(params), "tag": tag, "settings": settings,
                                          "best_file": best_file})
    for old in state_dir.glob("*.safetensors"):
        if not old.name.endswith(f"-{epoch}.safetensors") and old.name != best_file:
            old.unlink(missing_ok=True)


def _best_file(state_dir: Path) -> str | None:
    """The best weights' file that the saved state names, if it names one and it is there."""
    try:
        name = json.loads((state_dir / "state.json").read_text()).get("best_file")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(name, str) or not re.fullmatch(r"best-[0-9]{1,9}\.safetensors", name):
        return None
    return name if (state_dir / name).is_file() else None


def publish_best(state_dir: Path, out_dir: Path) -> None:
    """Copy the best weights the saved state names to OUT/best.safetensors (atomically)."""
    name = _best_file(state_dir)
    if name is not None:
        with atomic_path(Path(out_dir) / "best.safetensors") as tmp:
            shutil.copyfile(state_dir / name, tmp)


def load_state(state_dir: Path, model, optimizer, device):
    """(epoch, best record, history) of the saved state, with weights and momentum loaded in place."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = json.loads((state_dir / "state.json").read_text())
        epoch = int(state["epoch"])
        params = list(model.parameters())
        if state.get("num_params") != len(params):
            raise ValueError("it belongs to a different model")
        weights = load_file(str(_state_file(state_dir, "model", epoch)), device=str(device))
        buffers = load_file(str(_state_file(state_dir, "optimizer", epoch)), device=str(device))
        expected = model.state_dict()  # load_state_dict copies what matches before it refuses what does not
        if set(weights) != set(expected):
            raise ValueError("its weights name other tensors than the model's")
        for key, tensor in weights.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(f"{key} is {tuple(tensor.shape)}, the model's {tuple(expected[key].shape)}")
        momentum = {}
        for key, buf in buffers.items():
            name, _, index = key.partition(".")
            if name != "momentum" or not index.isdigit() or int(index) >= len(params):
                raise ValueError(f"unknown optimizer tensor {key!r}")
            p = params[int(index)]
            if buf.shape != p.shape:
                raise ValueError(f"momentum of parameter {index} is {tuple(buf.shape)}, the parameter "
                                 f"{tuple(p.shape)}")
            # In the parameter's own layout: CUDA's fused SGD refuses a buffer whose strides differ from its
            # parameter's (channels_last weights against the contiguous tensors safetensors gives back).
            momentum[p] = torch.empty_like(p).copy_(buf)
        model.load_state_dict(weights)  # last: a state refused above leaves the model as it was
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        # a weights file cut short raises safetensors' own error type, which named no file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, SafetensorError):
            reason = f"a state file is damaged: {reason}"
        raise CompressError(f"cannot resume from {state_dir} ({reason}); "
                            "run with --no-resume to start over") from None
    for p, buf in momentum.items():
        optimizer.state[p]["momentum_buffer"] = buf
    return epoch, state.get("best"), list(state.get("history", []))


def _state_file(state_dir: Path, kind: str, epoch: int) -> Path:
    numbered = state_dir / f"{kind}-{epoch}.safetensors"
    legacy = state_dir / f"{kind}.safetensors"  # state written before files were numbered by epoch
    return legacy if legacy.exists() and not numbered.exists() else numbered


def rewrite_metrics(out_dir: Path, history: list[dict]) -> None:
    # Epochs after the last saved state were lost with the interruption; forget their lines too.
    from compress.atomic import write_text

    write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


# Settings that name a stage's input: state saved for other inputs is stale, and starting over loses nothing.
INPUT_SETTINGS = ("parent", "from", "like")


def _differences(state_dir: Path, settings: dict | None) -> list[str] | None:
    """The settings the saved state was trained with otherwise than `settings` (as they would be recorded
    now: compress.data.fingerprint.as_recorded); None when either side records none."""
    saved = state_settings(state_dir)
    if saved is None or settings is None:
        return None
    current = as_recorded(json.loads(json.dumps(settings, default=str)), saved)
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def same_run(state_dir: Path, settings: dict | None) -> bool:
    """Saved state whose tag differs only because of how its settings were recorded (before the data
    fingerprint, another spelling of --data): the same run, so it is resumed, not started over."""
    return _differences(state_dir, settings) == []


def check_discardable(state_dir: Path, settings: dict | None) -> None:
    """Refuse to discard an interrupted run that differs in more than its inputs."""
    differ = _differences(state_dir, settings)
    if differ and not set(differ) <= set(INPUT_SETTINGS):
        raise CompressError(f"{state_dir.parent} holds an interrupted run with other settings "
                            f"({', '.join(differ)}); rerun with its settings to resume it, or "
                            f"{restart_advice()} to start over")
