"""The structure checks of issue 16, runnable by anyone (`pytest tests/test_structure.py`): no import circle
between modules of ours, a runtime that imports no other room, and small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# import name -> folder (pyproject.toml's package-dir mapping)
ROOMS = {"compress.models": "models", "compress.exporting": "export", "compress.runtime": "runtime",
         "compress": "compress"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_PARAMETERS = 10


def _modules() -> dict[str, Path]:
    found = {}
    for name, folder in ROOMS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([name, *parts])] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours that an import of `name` loads (a name imported from a package may be a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
            if not all(n in MODULES for n in names):  # a name defined in the package's __init__, not a submodule
                names.append(base)
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module and not (target == "compress" and module != "compress"):
                targets.add(target)
    return targets


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_between_our_modules():
    assert _cycles() == []


def test_runtime_imports_no_other_room():
    leaks = {m: sorted(t for t in targets if not t.startswith("compress.runtime"))
             for m, targets in GRAPH.items() if m.startswith("compress.runtime")}
    assert {m: t for m, t in leaks.items() if t} == {}


# Which rooms each room may import (the design card's table; export shares the runtime's atomic writer,
# strict JSON reader and engine sidecar format, which live in runtime/ because runtime/ stands alone).
MAY_IMPORT = {"compress.runtime": set(), "compress.models": set(), "compress.exporting": {"compress.runtime"},
              "compress": {"compress.runtime", "compress.models", "compress.exporting"}}


def _room(module: str) -> str:
    return next((r for r in MAY_IMPORT if r != "compress" and (module == r or module.startswith(r + "."))),
                "compress")


def test_rooms_import_only_what_the_design_allows():
    leaks = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
                   if _room(t) != _room(m) and _room(t) not in MAY_IMPORT[_room(m)])
    assert leaks == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module):
    assert len(MODULES[module].read_text().splitlines()) <= MAX_MODULE_LINES


def _is_click_command(node) -> bool:
    for d in node.decorator_list:
        func = d.func if isinstance(d, ast.Call) else d
        if getattr(func, "attr", getattr(func, "id", "")) in ("command", "group", "option", "argument"):
            return True
    return False


def _functions():
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_click_command(node):
                yield f"{module}.{node.name}:{node.lineno}", node


def test_functions_are_short_and_take_few_parameters():
    long, wide = [], []
    for where, node in _functions():
        if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
            long.append(where)
        a = node.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs] + [x for x in (a.vararg, a.kwarg) if x is not None]
        if params and params[0].arg in ("self", "cls"):
            params = params[1:]
        if len(params) > MAX_PARAMETERS:
            wide.append(where)
    assert (long, wide) == ([], [])
