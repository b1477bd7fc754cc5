"""The cached store as one process would run it: a memory cache in front of SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sessionware.stores import MemorySessionStore
from sessionware.stores.cached import CachedSessionStore
from tests.factories import sqlite

SERVER_SIDE = True


@asynccontextmanager
async def store() -> AsyncIterator[CachedSessionStore]:
    async with sqlite.store() as durable:
        yield CachedSessionStore(cache=MemorySessionStore(), durable=durable)
