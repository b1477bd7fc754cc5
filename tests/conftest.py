"""Shared fixtures: every store the project has, found as a module in tests/factories/.

A store joins every store-agnostic suite (the contract in tests/stores/, tests/acceptance/) by
adding one module there with an async context manager ``store()`` and ``SERVER_SIDE`` (True for a
record store, False for the cookie store). A factory whose ``store()`` takes ``clock=`` gets a
manual clock in the contract suite instead of real sleeps.

``SESSIONWARE_STORES=memory,cookie`` limits a local run to some factories (never under CI).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from sessionware.stores import CookieSessionStore, RecordStore

_ONLY = {name for name in os.environ.get("SESSIONWARE_STORES", "").split(",") if name}
if _ONLY and os.environ.get("CI") == "true":
    raise RuntimeError("SESSIONWARE_STORES is for local runs; CI runs every store")

FACTORIES: dict[str, ModuleType] = {
    path.stem: importlib.import_module(f"tests.factories.{path.stem}")
    for path in sorted((Path(__file__).parent / "factories").glob("[!_]*.py"))
    if not _ONLY or path.stem in _ONLY
}
SERVER_SIDE = sorted(name for name, module in FACTORIES.items() if module.SERVER_SIDE)


@pytest.fixture(params=sorted(FACTORIES))
async def any_store(
    request: pytest.FixtureRequest,
) -> AsyncIterator[RecordStore | CookieSessionStore]:
    """Each store in turn, the cookie store included."""
    async with FACTORIES[request.param].store() as store:
        yield store


@pytest.fixture(params=SERVER_SIDE)
async def server_store(request: pytest.FixtureRequest) -> AsyncIterator[RecordStore]:
    """Each record store (server-side: invalidation supported)."""
    async with FACTORIES[request.param].store() as store:
        yield store
