"""The layer's shape (issue 19): no module reaches into another's private names, and the modules import
each other without a cycle (at module level or inside functions), so each can be read on its own."""

from __future__ import annotations

import ast
from pathlib import Path

LAYER = Path(__file__).resolve().parents[2] / "layers" / "opentracking" / "opentracking"
MODULES = {path.stem: ast.parse(path.read_text()) for path in LAYER.glob("*.py") if path.stem != "__init__"}


def imports(tree: ast.Module) -> list[tuple[str, str]]:
    """(module, name) for every `from opentracking[.module] import name` anywhere in the tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "opentracking":
            for alias in node.names:
                if node.module == "opentracking":
                    found.append((alias.name, ""))
                else:
                    found.append((node.module.split(".")[1], alias.name))
    return found


def test_no_module_uses_another_modules_private_names():
    crossing = []
    for name, tree in MODULES.items():
        crossing += [
            (name, module, imported) for module, imported in imports(tree) if imported.startswith("_")
        ]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in MODULES
                and node.value.id != name
                and node.attr.startswith("_")
            ):
                crossing.append((name, node.value.id, node.attr))
    assert crossing == []


def test_modules_import_each_other_without_a_cycle():
    edges = {
        name: {module for module, _ in imports(tree) if module in MODULES} for name, tree in MODULES.items()
    }
    cycles = []

    def visit(start: str, module: str, path: list[str]) -> None:
        for following in sorted(edges[module]):
            if following == start:
                cycles.append([*path, start])
            elif following not in path:
                visit(start, following, [*path, following])

    for name in sorted(MODULES):
        visit(name, name, [name])
    assert cycles == []
