"""Known entry points of known packages: timm's `create_model` and ultralytics' task models, with their
arguments checked, and the (arch, arch_kwargs) that rebuild a timm or ultralytics model object.

A model directory may name these without the user trusting anything (compress.models.trust), so each
argument that would make the package fetch or read something (pretrained weights, a checkpoint path, a
Hugging Face hub name, a cfg file outside the package) is refused here, before the package is called.
timm and ultralytics stay optional: they are imported only when a model names them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import torch.nn as nn

from .errors import UnknownArchError

TIMM_FACTORIES = ("timm:create_model", "timm.models:create_model")
ULTRALYTICS_MODULE = "ultralytics.nn.tasks"
ULTRALYTICS_TASKS = ("DetectionModel", "SegmentationModel", "PoseModel", "OBBModel", "ClassificationModel")
OWN_MODULES = "compress.models."
# create_model arguments that load weights or configuration from somewhere other than model.safetensors
TIMM_REFUSED = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def ultralytics_arch(task: str) -> str:
    return f"{ULTRALYTICS_MODULE}:{task}"


def is_known_entry(spec: str) -> bool:
    """True for the entry points a model directory may name without trust. This toolkit's own modules
    count only for nn.Module classes, which resolution checks (compress.models.user)."""
    module, _, _attr = spec.partition(":")
    return (spec in TIMM_FACTORIES or spec in {ultralytics_arch(t) for t in ULTRALYTICS_TASKS}
            or (module + ".").startswith(OWN_MODULES))


def is_known_factory(spec: str) -> bool:
    """Known entry points that are functions rather than classes."""
    return spec in TIMM_FACTORIES


def takes_argument(target, name: str) -> bool:
    """Arguments a known factory forwards through **kwargs: timm's create_model passes num_classes and
    in_chans to every architecture."""
    module = getattr(target, "__module__", "") or ""
    return (getattr(target, "__name__", "") == "create_model" and module.startswith("timm.")
            and name in ("num_classes", "in_chans"))


def check_arguments(spec: str, kwargs: dict) -> dict:
    """The arguments to call a known entry point with, after refusing those that would fetch or read
    anything; other entry points get `kwargs` unchanged."""
    if spec in TIMM_FACTORIES:
        return _timm_arguments(spec, kwargs)
    if spec.partition(":")[0] == ULTRALYTICS_MODULE:
        from .ultralytics_cfg import task_arguments

        return task_arguments(spec, kwargs)
    return kwargs


def _timm_arguments(spec: str, kwargs: dict) -> dict:
    name = kwargs.get("model_name")
    if name is None:
        return kwargs  # the signature check names the missing argument
    if not isinstance(name, str) or not name or ":" in name or "/" in name:
        raise ValueError(f"{spec}: model_name must be a timm architecture name such as 'resnet18' (hub and local "
                         f"directory names are not loaded), got {name!r:.80}")
    import timm

    if not timm.is_model(name.split(".", 1)[0]):
        raise UnknownArchError(f"{spec}: timm has no model {name!r:.80}")
    refused = [k for k in TIMM_REFUSED if kwargs.get(k) is not None]
    if kwargs.get("pretrained"):
        refused.insert(0, "pretrained")
    if refused:
        raise ValueError(f"{spec}: argument {refused[0]} would load weights or configuration from elsewhere; "
                         "a model directory's weights come from its model.safetensors")
    return kwargs


# --- the arguments that rebuild a model object -----------------------------------------------------------

def describe(model: nn.Module) -> tuple[str, dict] | None:
    """(arch, arch_kwargs) for a timm or ultralytics model object, or None for other models. A model from
    those packages whose construction can't be told is refused in one line."""
    module = type(model).__module__
    if module.startswith("timm."):
        return _describe_timm(model)
    if module.startswith("ultralytics."):
        return _describe_ultralytics(model)
    return None


def _describe_timm(model: nn.Module) -> tuple[str, dict]:
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:  # timm before 0.9 called it default_cfg
        cfg = getattr(model, "default_cfg", None) or {}
    name = cfg.get("architecture") if isinstance(cfg, dict) else None
    if not isinstance(name, str):
        raise ValueError(f"cannot tell how timm built this {type(model).__name__} (it has no pretrained_cfg "
                         "architecture); pass arch='timm:create_model' and arch_kwargs={'model_name': ...}")
    try:
        from timm.models import get_model_args

        args = get_model_args(model)
    except ImportError:  # timm before 1.0.20 records no construction arguments
        args = dict(getattr(model, "_model_args", {}) or {})
        if hasattr(model, "num_classes"):
            args["num_classes"] = model.num_classes
    kwargs = {"model_name": name, **args}
    for key, value in kwargs.items():
        if not _is_json(value):
            raise ValueError(f"timm model {name}: its argument {key}={value!r:.60} is not JSON; pass arch_kwargs "
                             "with a JSON value for it")
    return TIMM_FACTORIES[0], kwargs


def _describe_ultralytics(model: nn.Module) -> tuple[str, dict]:
    task = type(model).__name__
    if type(model).__module__ != ULTRALYTICS_MODULE or task not in ULTRALYTICS_TASKS:
        inner = getattr(model, "model", None)
        hint = (f"; save its .model (a {type(inner).__name__})" if type(inner).__name__ in ULTRALYTICS_TASKS else
                "; pass arch and arch_kwargs")
        raise ValueError(f"cannot tell how to rebuild an ultralytics {task}{hint}")
    cfg = getattr(model, "yaml", None)
    if not isinstance(cfg, dict) or not _is_json(cfg):
        raise ValueError(f"this {task} has no JSON model.yaml to rebuild it from; pass arch and arch_kwargs")
    cfg = copy.deepcopy(cfg)
    return ultralytics_arch(task), {"cfg": cfg, "ch": cfg.get("channels", 3), "nc": cfg.get("nc"),
                                    "verbose": False}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
