"""Litestar as the docs show it (issue 16 item 13): the ``litestar`` extra, the quickstart's
Litestar example with ``request.session`` in a handler, and the extras each example names."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path
from typing import Any

import pytest

from tests.client import request
from tests.docs_examples import ROOT, close_stores, example, run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

QUICKSTART = "docs/quickstart.md"
SECTIONS = ["FastAPI", "Starlette", "Litestar", "Raw ASGI"]
# A store class and the driver it imports when it is used.
DRIVERS = {"RedisSessionStore": "redis", "PostgresSessionStore": "asyncpg"}


def extras() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    found: dict[str, list[str]] = project["optional-dependencies"]
    return found


def distribution(requirement: str) -> str:
    """``"fastapi>=0.110; extra == 'x'"`` -> ``"fastapi"``."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert name is not None, requirement
    return name.group(0).lower().replace("_", "-")


def closure(names: set[str]) -> set[str]:
    """``names`` and every distribution they require, as installed here."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            needed = requires(name) or []
        except PackageNotFoundError:
            continue
        todo.extend(distribution(r) for r in needed if "extra ==" not in r)
    return seen


def section_text(title: str) -> str:
    text = (ROOT / QUICKSTART).read_text(encoding="utf-8")
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found is not None, f"no section {title!r} in {QUICKSTART}"
    return found.group(1)


def installed_by(text: str) -> set[str]:
    """What the ``pip install ...`` in ``text`` installs: its extras' requirements and names."""
    found = re.search(r"`pip install ([^`]+)`", text)
    assert found is not None, "the section names no `pip install ...`"
    names: set[str] = set()
    table = extras()
    for word in found.group(1).replace("'", " ").split():
        package, _, chosen = word.partition("[")
        names.add(distribution(package))
        for extra in filter(None, chosen.rstrip("]").split(",")):
            assert extra in table, f"no extra [{extra}] in pyproject.toml"
            names.update(distribution(r) for r in table[extra])
    return names


def needed_by(code: str) -> set[str]:
    """The distributions an example imports (beyond the standard library and sessionware)."""
    tree = ast.parse(code)
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
        elif isinstance(node, ast.Name) and node.id in DRIVERS:
            modules.add(DRIVERS[node.id])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "sessionware"}


def test_there_is_a_litestar_extra() -> None:
    assert "litestar" in {distribution(r) for r in extras().get("litestar", [])}
    assert "litestar" in {distribution(r) for r in extras()["dev"]}


@pytest.mark.parametrize("title", SECTIONS)
def test_each_quickstart_example_names_the_extras_it_needs(title: str) -> None:
    text = section_text(title)
    named = installed_by(text)
    assert "uvicorn" in named, f"{title}: name an ASGI server (uvicorn) to run the example"
    missing = needed_by(example(QUICKSTART, title).code) - closure(named)
    assert not missing, f"{title}: the example imports {missing}, which its pip line leaves out"


def test_fastapi_with_redis_needs_both_extras() -> None:
    assert "`pip install 'sessionware[fastapi,redis]' uvicorn`" in section_text("FastAPI")


async def test_request_session_in_the_quickstart_litestar_handler(tmp_path: Path) -> None:
    app: Any = run(example(QUICKSTART, "Litestar"), tmp_path)["app"]
    try:
        first = await request(app, "GET", "/count")
        assert (first.status, first.json()) == (200, {"n": 1})
        cookie = first.cookie()
        assert cookie is not None
        second = await request(app, "GET", "/count", cookies={cookie.name: cookie.value})
        assert second.json() == {"n": 2}
        assert (await request(app, "GET", "/count")).json() == {"n": 1}  # no cookie: a new one
    finally:
        await close_stores(app)
