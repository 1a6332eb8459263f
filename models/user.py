"""Architectures named as ``package.module:Class``: the user's own ``nn.Module`` classes.

Importing the named module is the only code that runs; nothing is unpickled. The current working
directory is searched too, as ``python -m`` would, because a console script's ``sys.path`` starts at
the script's own folder rather than where the user stands.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys

import torch.nn as nn

from . import UnknownArchError

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_import_path(name: str) -> bool:
    return isinstance(name, str) and ":" in name


def resolve_class(spec: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass named by ``package.module:Class``."""
    if not _SPEC.match(spec or ""):
        raise UnknownArchError(f"architecture {spec!r} is not of the form package.module:Class")
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, spec)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UnknownArchError(f"{module_name} has no attribute {attr!r} (from --arch {spec})")
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise UnknownArchError(f"{spec} is not an nn.Module class (it is {type(obj).__name__})")
    return obj


def _import(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        missing_is_ours = exc.name is not None and module_name.split(".")[0] == exc.name.split(".")[0]
        if missing_is_ours and cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)
            try:
                return importlib.import_module(module_name)
            except ModuleNotFoundError:
                pass
        if missing_is_ours:
            raise UnknownArchError(f"cannot import module {module_name!r} named by {spec} "
                             "(is it on PYTHONPATH or in the current directory?)") from None
        raise ValueError(f"importing {module_name} failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything while importing
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"importing {module_name} failed: {type(exc).__name__}: {first}") from None


def accepts(cls: type, name: str) -> bool:
    """True when the constructor names a parameter `name`; a bare **kwargs does not count, because
    what it forwards to is unknown."""
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def build_user_model(spec: str, kwargs: dict) -> nn.Module:
    cls = resolve_class(spec)
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{spec} does not take the arguments {json_like(kwargs)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a user's constructor may raise anything
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{spec}({json_like(kwargs)}) failed: {type(exc).__name__}: {first}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec}(...) returned a {type(model).__name__}, not an nn.Module")
    return model


def json_like(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
