"""The project's import graph, read from the source (AST): what a module imports, at import time or inside
functions, but not under ``if TYPE_CHECKING:``. Used by the stage-dependency and code-health tests."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from tests.conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
PACKAGE = "pipeline"


def module_file(name: str) -> Path | None:
    """The source file of project module ``name`` (a module or a package's ``__init__.py``)."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk_runtime(node: ast.AST) -> Iterable[ast.AST]:
    """Every node that can run: the whole tree but the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if _type_checking_block(child):
            yield from (n for stmt in child.orelse for n in [stmt, *_walk_runtime(stmt)])
            continue
        yield child
        yield from _walk_runtime(child)


@cache
def direct_imports(name: str) -> frozenset[str]:
    """Project modules that module ``name`` imports anywhere in its code (functions included)."""
    path = module_file(name)
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _walk_runtime(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if m.split(".")[0] == PACKAGE and module_file(m) is not None)


def closure(roots: Iterable[str]) -> set[str]:
    """The modules importing ``roots`` runs: their imports, transitively, and every enclosing package."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c imports a and a.b first
            module = ".".join(parts[:i])
            if module not in seen and module_file(module) is not None:
                seen.add(module)
                todo.extend(direct_imports(module))
    return seen
