"""Which code a model directory may name, decided before anything is imported.

An ``arch`` read from a file (model.json) is a stranger's word. It may name, without further ado:

* a registry name (``vgg19``, ``preresnet164``, ``resnet18``, ...): code of this toolkit or torchvision;
* a known entry point of a known package (``timm:create_model``, ``ultralytics.nn.tasks:DetectionModel``,
  this toolkit's own classes): see compress.models.factories, which also checks their arguments;
* an import path whose module the user trusts: the `trust` argument of the loading function, the
  ``COMPRESS_TRUSTED_CODE`` environment variable (comma-separated), ``compress --trust MODULE`` on the
  command line, or a ``with trusting(...)`` block.

Anything else is refused in one line that says how to trust it, and nothing has been imported by then.
An ``arch`` the user types (``--arch``) or passes in code is theirs and needs no trust.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from typing import Iterable, Iterator, Union

from .errors import UnknownArchError

ENV = "COMPRESS_TRUSTED_CODE"
_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_ENTRY = re.compile(rf"^{_NAME}(?::{_NAME})?$")

Trust = Union[None, bool, str, Iterable[str]]

_scoped: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("compress_trusted", default=())


class UntrustedCodeError(UnknownArchError):
    """A file names code (a module to import) that the user has not trusted."""


def parse_entries(trust: Trust, where: str = "trust") -> tuple[str, ...] | bool:
    """`trust` as a tuple of module (or ``module:attr``) names; True stays True ("any import path")."""
    if trust is None or trust is False:
        return ()
    if trust is True:
        return True
    items = trust.split(",") if isinstance(trust, str) else list(trust)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{where}: module names must be strings, got {item!r}")
        item = item.strip()
        if not item:
            continue
        if not _ENTRY.match(item):
            raise ValueError(f"{where}: {item!r} is not a module name (package.module) or an import path "
                             "(package.module:Name)")
        out.append(item)
    return tuple(out)


def env_entries() -> tuple[str, ...]:
    return parse_entries(os.environ.get(ENV, ""), f"environment variable {ENV}")  # type: ignore[return-value]


@contextlib.contextmanager
def trusting(*modules: str) -> Iterator[None]:
    """Trust `modules` (``pkg``, ``pkg.mod`` or ``pkg.mod:Name``) for model directories loaded in this block."""
    entries = parse_entries(list(modules))
    token = _scoped.set(_scoped.get() + tuple(entries))  # type: ignore[operator]
    try:
        yield
    finally:
        _scoped.reset(token)


def trusted_entries(trust: Trust = None) -> tuple[str, ...] | bool:
    explicit = parse_entries(trust)
    if explicit is True:
        return True
    return tuple(explicit) + env_entries() + _scoped.get()


def is_trusted(spec: str, entries: tuple[str, ...] | bool) -> bool:
    """True when ``module:attr`` lies under a trusted module, or is itself a trusted import path."""
    if entries is True:
        return True
    module, _, attr = spec.partition(":")
    for entry in entries:
        if ":" in entry:
            if entry == spec:
                return True
        elif module == entry or module.startswith(entry + "."):
            return True
    return False


def check_trusted(spec: str, trust: Trust = None, where: str = "model.json") -> None:
    """Refuse an import path read from a file unless the user trusts it (known entry points pass)."""
    from .factories import is_known_entry

    if is_known_entry(spec) or is_trusted(spec, trusted_entries(trust)):
        return
    module = spec.partition(":")[0]
    raise UntrustedCodeError(
        f"{where} names code {spec!r}, which is not trusted and was not imported; if you trust that module, "
        f"pass trust={module!r} (CLI: compress --trust {module} ..., or {ENV}={module})")
