"""No import cycles between our modules, so the layout (docs/architecture.md) stays a layering.

The graph has an edge for every import of one of our modules, at module level or inside a function (a cycle
hidden in a function-level import is still a cycle of design: ``streams/app`` <-> its stages, ``roles`` <->
``api_server`` and ``webhooks/api`` <-> ``openapi`` were such). Only imports under ``if TYPE_CHECKING:`` are
left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("smsflow", "streams", "connectors", "devkit")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_package: bool) -> set[str]:
    """Every module ``module`` imports when it runs, wherever the import statement is, but type-only ones."""
    found: set[str] = set()
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            # ``from pkg import submodule`` imports the submodule too
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        imported = _imports(tree, module, path.name == "__init__.py")
        edges = set()
        for name in imported:
            # importing a.b.c runs a and a.b first: every package on the way is an edge too
            parts = name.split(".")
            edges.update(p for i in range(1, len(parts) + 1) if (p := ".".join(parts[:i])) in files)
        edges.discard(module)
        # a package's own __init__ is not a cycle with its submodules unless it imports them
        graph[module] = {e for e in edges if not module.startswith(e + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_our_modules_import_each_other_without_a_cycle() -> None:
    graph = import_graph()
    assert "streams.topology" in graph and "smsflow.api.app" in graph  # the walk found the code
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_sees_a_cycle_through_a_package_init() -> None:
    graph = {"a": {"a.x"}, "a.x": {"b"}, "b": {"a"}}
    assert find_cycle(graph) == ["a", "a.x", "b", "a"]


def test_only_the_cli_reaches_into_the_dev_harness() -> None:
    """devkit/ (local Kafka, embedded registry, demo, simulator) is not part of what production runs: the
    CLI's dev commands start it, nothing else in smsflow, streams or connectors imports it."""
    graph = import_graph()
    users = {
        module
        for module, imported in graph.items()
        if not module.startswith("devkit") and any(m == "devkit" or m.startswith("devkit.") for m in imported)
    }
    assert users == {"smsflow.cli"}
