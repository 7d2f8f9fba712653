"""The dependency rule (docs/architecture.md), checked on the source: imports run one way.

- No import cycles between the project's modules (strongly connected components of size one).
- No function-level import of a project module: a lazy import is how a cycle hides. Django's
  `AppConfig.ready()` (connecting receivers and sinks once the app registry is ready) is the
  one sanctioned place.
- The event core (`events`, outside `events.gateway`) never imports the gateway, the domain
  (`runs`), the web pages or the project package; the gateway never imports the domain's API
  or the pages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("events", "runs", "web", "researchflow")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> Iterator[str]:
    """Project modules an import statement names (a `from x import y` names x.y if it is one)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    yield target
    for alias in node.names:
        yield f"{target}.{alias.name}"


def _project_target(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(imported project module, imported inside a function) for each import in `module`."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if _is_app_ready(module, child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in _resolve(module, child, is_package):
                    target = _project_target(name)
                    if target is not None and target != module:
                        yield target, in_function
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # annotations only: no run-time edge
            else:
                yield from visit(
                    child,
                    in_function
                    or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda),
                )

    yield from visit(tree, False)


def _is_app_ready(module: str, node: ast.AST) -> bool:
    return module.endswith(".apps") and isinstance(node, ast.FunctionDef) and node.name == "ready"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _graph() -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    lazy: set[tuple[str, str]] = set()
    for module, path in MODULES.items():
        for target, in_function in _imports(module, path):
            if in_function:
                lazy.add((module, target))
            else:
                edges[module].add(target)
    return edges, lazy


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of size > 1 (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return found


EDGES, LAZY = _graph()


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_it_finds_the_project_modules() -> None:
    assert len(MODULES) > 30
    assert any(_in(m, "events.gateway") for m in MODULES)


def test_it_has_no_import_cycles() -> None:
    every_edge = {m: EDGES[m] | {t for s, t in LAZY if s == m} for m in EDGES}
    assert _cycles(every_edge) == []


def test_it_has_no_lazy_imports_of_project_modules() -> None:
    assert sorted(LAZY) == []


def _core(module: str) -> bool:
    return _in(module, "events") and not _in(module, "events.gateway")


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        (_core, ("events.gateway", "runs", "web", "researchflow")),
        (lambda m: _in(m, "events.gateway"), ("runs.api", "runs.admin", "web")),
        (lambda m: _in(m, "runs"), ("events.gateway", "web")),
    ],
    ids=["core", "gateway", "domain"],
)
def test_it_keeps_dependencies_one_way(source: object, forbidden: tuple[str, ...]) -> None:
    assert callable(source)
    wrong = sorted(
        (module, target)
        for module, targets in EDGES.items()
        if source(module)
        for target in targets | {t for m, t in LAZY if m == module}
        if any(_in(target, f) for f in forbidden)
    )
    assert wrong == []


def test_it_sees_a_cycle_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The Python client (clients/python) speaks only the public protocol: it imports nothing of the
# server, neither the project's packages nor the server's frameworks. Any import counts here,
# even one inside a function or under TYPE_CHECKING: the package must install without them.
CLIENT = ROOT / "clients" / "python" / "researchflow_client"
SERVER_SIDE = {
    *PACKAGES,
    "devtools",
    "bench",
    "tests",
    "django",
    "channels",
    "daphne",
    "rest_framework",
}


def _top_level_imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0]


def test_the_python_client_imports_nothing_of_the_server() -> None:
    sources = sorted(CLIENT.rglob("*.py"))
    assert len(sources) > 5
    wrong = sorted(
        (str(path.relative_to(ROOT)), name)
        for path in sources
        for name in _top_level_imports(path)
        if name in SERVER_SIDE
    )
    assert wrong == []
