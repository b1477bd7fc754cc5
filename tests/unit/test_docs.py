"""The docs stay true: api.md is what docs/gen_api.py makes now, links resolve, code parses."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

import sessionware.stores.postgres
import sessionware.stores.sqlite

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def gen_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api", DOCS / "gen_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date() -> None:
    expected = gen_api().render()
    actual = (DOCS / "api.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/api.md is stale: run `python docs/gen_api.py`"


def test_api_reference_covers_every_public_name() -> None:
    import sessionware
    import sessionware.stores

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### (?:class |enum )?`(\w+)(?:\(\))?`", text, re.M))
    assert set(sessionware.__all__) | set(sessionware.stores.__all__) <= headings


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_file(), f"{page.name}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: no heading for #{anchor}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "api.md"], ids=lambda p: p.name)
def test_python_examples_parse(page: Path) -> None:
    """Examples are whole Python (api.md's blocks are signatures, not code)."""
    for language, code in FENCE.findall(page.read_text(encoding="utf-8")):
        if language == "python":
            ast.parse(code)


def _words(sql: str) -> str:
    """SQL without comments, in one line of single-spaced words (parentheses set apart)."""
    sql = re.sub(r"--[^\n]*", " ", sql)
    return " ".join(re.sub(r"([(),;])", r" \1 ", sql).split())


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (sessionware.stores.sqlite, {"t": "sessions"}),
        (sessionware.stores.postgres, dict.fromkeys("tiu", "sessionware_sessions")),
    ],
    ids=["sqlite", "postgres"],
)
def test_the_tables_in_stores_md_are_the_ones_the_stores_create(
    module: ModuleType, names: dict[str, str]
) -> None:
    """Every CREATE statement the store runs (default table name) is in a sql block of stores.md."""
    blocks = FENCE.findall((DOCS / "stores.md").read_text())
    sql_blocks = " ".join(_words(code) for lang, code in blocks if lang == "sql")
    statements = [sql.format(**names) for sql in module._SQL.values() if sql.startswith("CREATE")]
    assert len(statements) >= 4
    for statement in statements:
        assert _words(statement) in sql_blocks, statement
