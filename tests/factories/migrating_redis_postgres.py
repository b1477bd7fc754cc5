"""A migration as a fleet would run it: sessions moving from Redis to PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sessionware.stores.migrating import MigratingStore
from tests.factories import postgres, redis

SERVER_SIDE = True


@asynccontextmanager
async def store() -> AsyncIterator[MigratingStore]:
    async with redis.store() as old, postgres.store() as new:
        yield MigratingStore(old=old, new=new)
