"""Shared fixtures: every store the project has, found as a module in tests/factories/.

A store joins every store-agnostic suite (tests/stores/, tests/acceptance/) by adding one module
there with an async context manager ``store()`` and ``SERVER_SIDE`` (True unless the key is the
state, as with the cookie store).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from sessionware.stores import SessionStore

FACTORIES: dict[str, ModuleType] = {
    path.stem: importlib.import_module(f"tests.factories.{path.stem}")
    for path in sorted((Path(__file__).parent / "factories").glob("[!_]*.py"))
}
SERVER_SIDE = sorted(name for name, module in FACTORIES.items() if module.SERVER_SIDE)


@pytest.fixture(params=sorted(FACTORIES))
async def any_store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    """Each store in turn, the cookie store included."""
    async with FACTORIES[request.param].store() as store:
        yield store


@pytest.fixture(params=SERVER_SIDE)
async def server_store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    """Each store that keeps state on the server (invalidation supported)."""
    async with FACTORIES[request.param].store() as store:
        yield store
