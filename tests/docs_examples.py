"""The ```python blocks of README.md and docs/*.md, found by page and section, and run.

docs/api.md is left out: docs/gen_api.py makes it from the code, its blocks are signatures
(not code), and ``test_api_reference_is_up_to_date`` keeps them equal to the code.
A block whose first line is ``# docs-test: skip: <reason>`` is skipped with that reason.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessionware import Key

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "api.md")]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
HEADING = re.compile(r"^(#{1,6}) (.+)$", re.M)
SKIP = re.compile(r"\A# docs-test: skip: (.+)$", re.M)


def _hex(key: Key) -> str:
    return (key.signing_key + key.encryption_key).hex()


ENVIRONMENT: Mapping[str, str] = {
    "SESSION_KEY": _hex(Key.generate()),
    "OLD_SESSION_KEY": _hex(Key.generate()),
    "SECRET_KEY": os.urandom(32).hex(),
    "MASTER_SECRET": os.urandom(32).hex(),
}
"""What the examples read from the environment, as a deployment would set it."""


@dataclass(frozen=True)
class Example:
    page: Path
    line: int  # of the block's first code line, 1-based
    section: str  # the nearest heading above it
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def skip_reason(self) -> str | None:
        found = SKIP.match(self.code)
        return found.group(1) if found else None


def blocks(page: Path) -> list[Example]:
    """Every fenced block of ``page``, with the heading it sits under."""
    text = page.read_text(encoding="utf-8")
    fences = list(FENCE.finditer(text))
    headings = [  # a "# comment" line inside a block is not a heading
        (m.start(), m.group(2).strip())
        for m in HEADING.finditer(text)
        if not any(f.start() < m.start() < f.end() for f in fences)
    ]
    found = []
    for match in fences:
        section = next((t for start, t in reversed(headings) if start < match.start()), "")
        line = text.count("\n", 0, match.start(2)) + 1
        found.append(Example(page, line, section, match.group(1), match.group(2)))
    return found


def python_examples() -> list[Example]:
    return [b for page in PAGES for b in blocks(page) if b.language == "python"]


def example(page: str, section: str) -> Example:
    """The one ```python block of ``page`` (relative to the repository) under ``section``."""
    found = [b for b in python_examples() if b.page == ROOT / page and b.section == section]
    assert len(found) == 1, f"{page} has {len(found)} python blocks under {section!r}"
    return found[0]


@contextmanager
def example_environment(directory: Path) -> Iterator[None]:
    """Run in ``directory`` (relative files such as sessions.db land there) with ENVIRONMENT."""
    saved_env = {name: os.environ.get(name) for name in ENVIRONMENT}
    saved_cwd = Path.cwd()
    os.environ.update(ENVIRONMENT)
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(block: Example, directory: Path) -> dict[str, Any]:
    """Execute ``block`` as a module of its own; its globals. Tracebacks point at the page."""
    name = f"docs_example_{block.page.stem}_{block.line}".replace("-", "_")
    module = types.ModuleType(name)
    module.__file__ = str(block.page)
    # Litestar resolves a handler's annotations through sys.modules[handler.__module__].
    sys.modules[name] = module
    # Blank lines first, so the code's line numbers are the page's.
    code = compile("\n" * (block.line - 1) + block.code, str(block.page), "exec")
    with example_environment(directory):
        exec(code, module.__dict__)
    return module.__dict__


async def close_stores(*objects: Any) -> None:
    """``aclose()`` the stores an example made: top-level ones and the one its app's middleware holds."""
    from sessionware.testing import find_session_middleware

    seen: set[int] = set()
    for obj in objects:
        candidates = [obj]
        try:
            middleware = find_session_middleware(obj)
        except (LookupError, TypeError):
            pass
        else:
            candidates.append(getattr(getattr(middleware, "engine", None), "store", None))
        for candidate in candidates:
            aclose = getattr(candidate, "aclose", None)
            if candidate is None or id(candidate) in seen or not callable(aclose):
                continue
            seen.add(id(candidate))
            if type(candidate).__module__.startswith("sessionware.stores"):
                await aclose()
