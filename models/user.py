"""Architectures named as ``package.module:Name``: a user's own ``nn.Module`` class, a factory function of a
module the user trusts, or a known entry point (timm's ``create_model``, ultralytics' task models).

Nothing is unpickled. Where the name comes from matters (compress.models.trust): a name the user typed or
passed in code may find a module in the current directory, as ``python -m`` would, because a console
script's ``sys.path`` starts at the script's own folder rather than where the user stands. A name read
from a file is checked against what the user trusts before anything is imported, and the current
directory is never searched for it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import re
import sys

import torch.nn as nn

from .errors import UnknownArchError

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_import_path(name: str) -> bool:
    return isinstance(name, str) and ":" in name


def check_spec(spec: str) -> None:
    if not _SPEC.match(spec or ""):
        raise UnknownArchError(f"architecture {spec!r} is not of the form package.module:Class")


def resolve_class(spec: str):
    """The ``nn.Module`` subclass (or known factory, or factory of a trusted module) that a name the user
    gave (``package.module:Name``) names."""
    from .trust import is_trusted, trusted_entries

    return resolve(spec, functions=is_trusted(spec, trusted_entries()))


def resolve(spec: str, *, search_cwd: bool = True, functions: bool = False):
    """The nn.Module class (or, with `functions`, the function) that `spec` names."""
    from .factories import OWN_MODULES, is_known_factory

    check_spec(spec)
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, spec, search_cwd)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UnknownArchError(f"{module_name} has no attribute {attr!r} (from --arch {spec})")
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        return obj
    own = (module_name + ".").startswith(OWN_MODULES)
    if (functions or is_known_factory(spec)) and not own and inspect.isfunction(obj):
        return obj
    hint = "" if inspect.isclass(obj) or own else (
        f"; a factory function is called only from a module you trust: COMPRESS_TRUSTED_CODE={module_name}, "
        f"compress --trust {module_name}, or a `with compress.models.trust.trusting({module_name!r})` block")
    raise UnknownArchError(f"{spec} is not an nn.Module class (it is {type(obj).__name__}){hint}")


def _import(module_name: str, spec: str, search_cwd: bool):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        cwd = os.getcwd()
        missing_is_ours = exc.name is not None and module_name.split(".")[0] == exc.name.split(".")[0]
        if search_cwd and missing_is_ours and cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)
            try:
                return importlib.import_module(module_name)
            except ModuleNotFoundError:
                pass
        if missing_is_ours:
            where = "on PYTHONPATH or in the current directory" if search_cwd else "installed or on PYTHONPATH"
            raise UnknownArchError(f"cannot import module {module_name!r} named by {spec} (is it {where}?)") from None
        raise ValueError(f"importing {module_name} failed: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything while importing
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"importing {module_name} failed: {type(exc).__name__}: {first}") from None


def accepts(cls, name: str) -> bool:
    """True when the constructor names a parameter `name`; a bare **kwargs does not count, because
    what it forwards to is unknown (except for known factories: timm's create_model takes num_classes)."""
    from .factories import takes_argument

    if takes_argument(cls, name):
        return True
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def check_call(spec: str, target, kwargs: dict) -> None:
    """Name missing and unexpected arguments before calling `target`, rather than a raw TypeError."""
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = sig.parameters.values()
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(k for k in kwargs if k not in named) if not takes_any else []
    if unknown:
        raise ValueError(f"{spec} does not take the arguments {json_like({k: kwargs[k] for k in unknown})} "
                         f"(it accepts {', '.join(sorted(named)) or 'none'})")
    missing = [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in kwargs]
    if missing:
        raise ValueError(f"{spec} needs the argument(s) {', '.join(missing)} (give them in arch_kwargs, --arch-kwargs on the command line)")
    positional_only = [p.name for p in params if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if positional_only:
        raise ValueError(f"{spec} takes positional-only argument(s) {', '.join(positional_only)}, which "
                         "arch_kwargs cannot give")


@contextlib.contextmanager
def _quiet_ultralytics(spec: str):
    """ultralytics logs its model summary at INFO to the stdout it found at import, verbose=False or not:
    `compress share --json` then printed no JSON. Its logger stays at WARNING while one is rebuilt."""
    if not spec.startswith("ultralytics."):
        yield
        return
    logger = logging.getLogger("ultralytics")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def build_user_model(spec: str, kwargs: dict, *, search_cwd: bool = True, functions: bool = False) -> nn.Module:
    """Call the class or factory `spec` names with the JSON arguments `kwargs` (checked first for known
    entry points)."""
    from .factories import check_arguments

    target = resolve(spec, search_cwd=search_cwd, functions=functions)
    kwargs = check_arguments(spec, dict(kwargs))
    check_call(spec, target, kwargs)
    try:
        with _quiet_ultralytics(spec):
            model = target(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{spec} does not take the arguments {json_like(kwargs)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a user's constructor may raise anything
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ValueError(f"{spec}({json_like(kwargs)}) failed: {type(exc).__name__}: {first}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec}(...) returned a {type(model).__name__}, not an nn.Module")
    return model


def json_like(kwargs: dict) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
    return text if len(text) <= 200 else text[:197] + "..."
