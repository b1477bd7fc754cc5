"""The cached store as a fleet would run it: a shared Redis cache in front of PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sessionware.stores.cached import CachedSessionStore
from tests.factories import postgres, redis

SERVER_SIDE = True


@asynccontextmanager
async def store() -> AsyncIterator[CachedSessionStore]:
    async with redis.store() as cache, postgres.store() as durable:
        yield CachedSessionStore(cache=cache, durable=durable)
