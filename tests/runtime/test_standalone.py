"""runtime/ stands alone: it imports nothing from the other rooms (compress/, export/, models/) nor torch,
and its modules import one another without a circle. Read from the source (AST), so an import inside
a function counts as much as one at the top, and a broken promise fails here before it fails on a Jetson."""

import ast
import re
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
PACKAGE = "compress.runtime"
# The other rooms under their import names, and under the top-level names they had before one namespace.
FOREIGN_ROOTS = ("compress", "models", "export", "runtime", "torch", "torchvision")
# "package.module:function", the form in which the backend registry names a runner to import later.
SPEC = re.compile(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+):[A-Za-z_]\w*")


def _modules() -> dict[str, Path]:
    return {f"{PACKAGE}.{p.stem}" if p.stem != "__init__" else PACKAGE: p for p in sorted(RUNTIME.glob("*.py"))}


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement wherever it sits, every importlib.import_module
    call on a literal, and every "module:function" string literal."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.stem == "__init__" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # `from compress.runtime import errors` imports the module compress.runtime.errors.
            found += [(f"{base}.{alias.name}" if f"{base}.{alias.name}" in _modules() else base, node.lineno)
                      for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, node.lineno))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SPEC.fullmatch(node.value):
            found.append((SPEC.fullmatch(node.value).group(1), node.lineno))
    return found


def _foreign(name: str) -> bool:
    if name == PACKAGE or name.startswith(PACKAGE + "."):
        return False
    return name.split(".")[0] in FOREIGN_ROOTS


def test_the_checker_sees_what_it_must():
    """The checker itself: it flags each way a runtime module could reach another room."""
    assert _foreign("compress.artifact") and _foreign("compress") and _foreign("compress.exporting.engine_sidecar")
    assert _foreign("models") and _foreign("export._files") and _foreign("torch.nn")
    assert not _foreign("compress.runtime.errors") and not _foreign("numpy") and not _foreign("onnx")
    names = [n for n, _ in _imports(f"{PACKAGE}.backends", RUNTIME / "backends.py")]
    assert "compress.runtime.ort_runner" in names  # "module:function" specs count as imports


@pytest.mark.parametrize("module", sorted(_modules()))
def test_runtime_imports_nothing_of_the_other_rooms(module):
    bad = [f"line {line}: {name}" for name, line in _imports(module, _modules()[module]) if _foreign(name)]
    assert not bad, f"{module} imports another room: {', '.join(bad)}"


def test_no_import_circle_inside_runtime():
    modules = _modules()
    graph = {m: sorted({n for n, _ in _imports(m, p) if n in modules and n not in (m, PACKAGE)})
             for m, p in modules.items()}
    assert graph[f"{PACKAGE}.bench"], "the graph must have edges to mean anything"
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                pytest.fail("import circle: " + " -> ".join(c.rsplit(".", 1)[-1] for c in cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_the_base_and_the_factory_import_no_backend_and_backends_import_the_base():
    modules = _modules()
    backends = {f"{PACKAGE}.{n}" for n in ("ort_runner", "trt_runner", "openvino_runner")}

    def statements(module):  # import statements only: the registry's "module:function" strings are lazy
        tree = ast.parse(modules[module].read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    for name in ("runner_base", "runners", "backends"):
        assert not statements(f"{PACKAGE}.{name}") & backends, name
    assert f"{PACKAGE}.runner_base" not in statements(f"{PACKAGE}.runners")  # the factory is not the base
    for backend in backends:
        assert f"{PACKAGE}.runner_base" in statements(backend) and f"{PACKAGE}.runners" not in statements(backend)
