"""The in-process memory store."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sessionware.stores import MemorySessionStore

SERVER_SIDE = True


@asynccontextmanager
async def store(clock: Callable[[], float] = time.time) -> AsyncIterator[MemorySessionStore]:
    yield MemorySessionStore(clock=clock)
