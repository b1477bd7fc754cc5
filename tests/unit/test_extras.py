"""The extras install what their features need (issue 28 item 14)."""

from __future__ import annotations

import ast
import sys

from sessionware.testing import store_contract
from tests.integration.test_litestar_quickstart import closure, distribution, extras


def test_the_fastapi_extra_reads_csrf_tokens_from_forms() -> None:
    """``CSRFProtected`` reads a form's token through python-multipart; without it every form
    post of a ``[fastapi]`` install was a 403 "CSRF token missing"."""
    assert "python-multipart" in closure({distribution(r) for r in extras()["fastapi"]})


def test_the_testing_extra_runs_the_shipped_contract_suite() -> None:
    """Everything ``sessionware.testing.store_contract`` imports beyond the core, and the
    pytest-asyncio its async tests need, comes with ``[testing]``."""
    installed = closure({distribution(r) for r in extras()["testing"]})
    assert {"pytest", "pytest-asyncio"} <= installed
    with open(store_contract.__file__, encoding="utf-8") as file:
        tree = ast.parse(file.read())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    third_party = imported - set(sys.stdlib_module_names) - {"sessionware", "__future__"}
    assert third_party <= installed, third_party
