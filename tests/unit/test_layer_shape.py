"""The layer's shape (issue 19): subpackages by area, no module reaches into another's private names, the
modules import each other without a cycle (at module level or inside functions), and every `__init__` is
empty, so importing one module (the pixel's cold start) pays for nothing else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

LAYER = Path(__file__).resolve().parents[2] / "layers" / "opentracking" / "opentracking"
AREAS = {
    "core",
    "http",
    "mail",
    "tracking",
    "storage",
    "domains",
    "messages",
    "delivery",
    "reporting",
    "webhooks",
    "privacy",
}
# The injector's public import path (DESIGN.md 3.3) stays at the top; it only re-exports mail.injection.
PUBLIC_SHIMS = {"injection"}


def dotted(path: Path) -> str:
    """'mail.injection' for layers/opentracking/opentracking/mail/injection.py."""
    return ".".join(path.relative_to(LAYER).with_suffix("").parts)


MODULES = {
    dotted(path): ast.parse(path.read_text()) for path in LAYER.rglob("*.py") if path.stem != "__init__"
}


def imports(tree: ast.Module) -> list[tuple[str, str, str]]:
    """(module, name, local name) for every `from opentracking... import name` anywhere in the tree; the
    module is the dotted name under opentracking that is imported from, or the module imported itself."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "opentracking":
            source = node.module.removeprefix("opentracking").lstrip(".")
            for alias in node.names:
                local = alias.asname or alias.name
                as_module = f"{source}.{alias.name}".lstrip(".")
                if as_module in MODULES:
                    found.append((as_module, "", local))
                else:
                    found.append((source, alias.name, local))
    return found


def test_modules_live_in_subpackages_by_area():
    top_level = {name for name in MODULES if "." not in name}
    assert top_level == PUBLIC_SHIMS
    assert {name.split(".")[0] for name in MODULES} - PUBLIC_SHIMS == AREAS
    for name in PUBLIC_SHIMS:
        body = MODULES[name].body
        assert all(isinstance(node, ast.ImportFrom | ast.Assign | ast.Expr) for node in body), name


def test_every_init_is_empty():
    inits = sorted(LAYER.rglob("__init__.py"))
    assert len(inits) == len(AREAS) + 1
    only_docstrings = [
        all(
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            for node in ast.parse(path.read_text()).body
        )
        for path in inits
    ]
    assert all(only_docstrings)


def test_no_module_uses_another_modules_private_names():
    crossing = []
    for name, tree in MODULES.items():
        found = imports(tree)
        crossing += [(name, module, imported) for module, imported, _ in found if imported.startswith("_")]
        module_names = {local: module for module, imported, local in found if not imported}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in module_names
                and node.attr.startswith("_")
            ):
                crossing.append((name, module_names[node.value.id], node.attr))
    assert crossing == []


def test_modules_import_each_other_without_a_cycle():
    edges = {
        name: {module for module, _, _ in imports(tree) if module in MODULES and module != name}
        for name, tree in MODULES.items()
    }
    assert sum(map(len, edges.values())) > 100, "the import graph is read"
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


# Powertools' idempotency utility keeps its records in the table through its own persistence layer; it is
# given the shared DynamoDB client (http.gateway), which is the one AWS storage call outside the adapter.
POWERTOOLS_PERSISTENCE = "http.gateway"


def test_only_the_storage_adapter_calls_dynamodb_or_s3():
    calls = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "client"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in ("dynamodb", "s3")
            ):
                calls.append((name, node.args[0].value))
    assert ("storage.store", "dynamodb") in calls and ("storage.store", "s3") in calls
    assert [c for c in calls if not c[0].startswith("storage.") and c[0] != POWERTOOLS_PERSISTENCE] == []


KEY_PREFIX = re.compile(r"^[A-Z][A-Z_]+#")


def test_only_storage_keys_writes_a_key_prefix():
    """Key formats such as "COPY#..." or "EVENTS#..." live in storage.keys, nowhere else."""
    found = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and KEY_PREFIX.match(node.value)
            ):
                found.append((name, node.value))
    assert any(name == "storage.keys" for name, _ in found)
    assert [(name, value) for name, value in found if name != "storage.keys"] == []


def test_the_injectors_public_path_works():
    """DESIGN.md 3.3: other tests import the injector as `from opentracking.injection import inject`."""
    from opentracking.injection import inject, inject_html

    message = b"Content-Type: text/html\r\n\r\n<html><body>Hi</body></html>\r\n"
    result = inject(message, "https://email.example.com/o/t")
    assert result.injected and b'src="https://email.example.com/o/t"' in result.message
    assert inject_html("<body>Hi</body>", "https://email.example.com/o/t", top=True).startswith(
        '<body><img src="https://email.example.com/o/t"'
    )
