"""A migration in one process: sessions moving from the memory store to SQLite."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sessionware.stores.migrating import MigratingStore
from tests.factories import sqlite
from tests.factories.memory import memory_store

SERVER_SIDE = True


@asynccontextmanager
async def store(clock: Callable[[], float] = time.time) -> AsyncIterator[MigratingStore]:
    async with sqlite.store(clock) as new:
        yield MigratingStore(old=memory_store(clock), new=new)
