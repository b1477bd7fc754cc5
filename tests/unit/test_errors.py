"""One exception tree, and a package without import cycles."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import sessionware
import sessionware.errors
from sessionware.errors import (
    DecodeError,
    LoadError,
    ProofError,
    SaveError,
    SessionwareError,
    StaleChallengeError,
    StoreError,
    UpdateError,
)

SRC = Path(sessionware.__file__).parent


def test_every_exception_the_package_defines_is_in_the_tree() -> None:
    """Issue 24: ``dbsc.ProofError`` and ``cli.DecodeError`` sat outside the root."""
    found = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [
            (path.name, node.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            and (node.name.endswith("Error") or node.name.endswith("Exception"))
        ]
    assert found and all(path == "errors.py" for path, _ in found), found
    for name in sessionware.errors.__all__:
        error = getattr(sessionware.errors, name)
        assert inspect.isclass(error) and issubclass(error, SessionwareError), name
    assert issubclass(StaleChallengeError, ProofError) and issubclass(DecodeError, ValueError)


def test_the_first_versions_store_errors_are_what_is_raised() -> None:
    assert LoadError is StoreError and SaveError is StoreError and UpdateError is StoreError


def _imports(path: Path) -> set[str]:
    """Every sessionware module ``path`` imports, at any level (in functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level)[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("sessionware")}


def test_no_module_imports_itself_back() -> None:
    """Issue 24: events -> stores.base -> repository -> events went round (the store mixin
    imported the repository inside its methods)."""
    modules = {
        ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): path
        for path in SRC.rglob("*.py")
    }
    graph = {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ re-exports its modules: importing it is not a dependency of theirs.
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    for name in graph:
        graph[name] -= {p for p in packages if name.startswith(p + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                cycle.extend([*trail, node, child])
                return True
            if child not in state and visit(child, [*trail, node]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if name not in state and visit(name, []):
            break
    assert not cycle, " -> ".join(cycle)
