"""The in-process memory store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sessionware.stores import MemorySessionStore

SERVER_SIDE = True


@asynccontextmanager
async def store() -> AsyncIterator[MemorySessionStore]:
    yield MemorySessionStore()
