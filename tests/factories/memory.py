"""The in-process memory store."""

from __future__ import annotations

import time
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sessionware.stores import MemorySessionStore

SERVER_SIDE = True


@asynccontextmanager
async def store(clock: Callable[[], float] = time.time) -> AsyncIterator[MemorySessionStore]:
    yield memory_store(clock)


def memory_store(clock: Callable[[], float]) -> MemorySessionStore:
    """A memory store whose TTL runs on ``clock`` (the contract suite moves it; deprecated for
    apps, whose middleware's clock decides expiry)."""
    if clock is time.time:
        return MemorySessionStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return MemorySessionStore(clock=clock)
