"""Admin calls over many sessions cost a few round trips, not a few per session.

Round trips are counted on the real servers, around the real connections: the Redis client's
packed sends (a pipeline is one) and the statements asyncpg sends (the pool's reset on release
included, through its query logger).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from sessionware import SessionAdmin
from sessionware.events import SessionEnded
from sessionware.repository import ENDED, Loaded
from sessionware.state import StoredState
from sessionware.stores import PostgresSessionStore, RecordStore, RedisSessionStore
from tests.factories.postgres import DSN
from tests.factories.redis import URL, delete_prefixed, unique_prefix
from tests.services import require

pytestmark = pytest.mark.asyncio

TTL = timedelta(minutes=5)
Counter = list[int]


def counting_connection(trips: Counter) -> type[Connection]:
    """A redis-py connection adding one to ``trips[0]`` per packed send (one round trip)."""

    class Counting(Connection):
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            trips[0] += 1
            await super().send_packed_command(command, check_health)

    return Counting


@asynccontextmanager
async def redis_store(trips: Counter) -> AsyncIterator[RecordStore]:
    require("Redis", "127.0.0.1", 6379)
    prefix = unique_prefix()
    client = Redis.from_url(URL, connection_class=counting_connection(trips))
    try:
        yield RedisSessionStore(client, key_prefix=prefix)
    finally:
        await client.aclose()
        await delete_prefixed(URL, prefix)


@asynccontextmanager
async def postgres_store(trips: Counter) -> AsyncIterator[RecordStore]:
    require("PostgreSQL", "127.0.0.1", 5432)

    def logged(record: object) -> None:
        trips[0] += 1

    async def init(conn: Any) -> None:
        conn.add_query_logger(logged)

    table = f"sessionware_test_{uuid.uuid4().hex}"
    store = PostgresSessionStore.from_dsn(DSN, table=table, connect_timeout=5, init=init)
    try:
        yield store
    finally:
        await store.aclose()
        conn = await asyncpg.connect(DSN, timeout=5)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
        finally:
            await conn.close()


STORES: dict[str, Callable[[Counter], Any]] = {"redis": redis_store, "postgres": postgres_store}


async def settle() -> None:
    """Let asyncpg's query loggers (scheduled with ``call_soon``) run."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.parametrize("kind", sorted(STORES))
async def test_admin_calls_cost_the_same_round_trips_for_few_or_many_sessions(kind: str) -> None:
    trips: Counter = [0]
    events: list[object] = []
    counted: dict[str, list[int]] = {"list": [], "end": []}
    async with STORES[kind](trips) as store:
        admin = SessionAdmin(store, on_event=events.append)
        repository = admin.repository
        assert repository is not None
        for n in (2, 3, 60):  # the first warms up (asyncpg learns the array types once)
            user = f"ada-{n}"
            keys = [
                (await repository.create({"n": i}, StoredState(user=user), TTL))[0]
                for i in range(n)
            ]
            kept = repository.id_of(keys[0])
            await settle()
            trips[0] = 0
            listed = await admin.sessions_for(user)
            await settle()
            counted["list"].append(trips[0])
            assert sorted(info.id for info in listed) == sorted(map(repository.id_of, keys))

            events.clear()
            trips[0] = 0
            assert await admin.end_all_for(user, keep=kept) == n - 1
            await settle()
            counted["end"].append(trips[0])
            # Revocation as before: a tombstone for each, one event per ended session.
            assert [type(e) for e in events] == [SessionEnded] * (n - 1)
            for key in keys[1:]:
                assert await repository.load(key, TTL) is ENDED
            assert isinstance(await repository.load(keys[0], TTL), Loaded)
            assert [info.id for info in await admin.sessions_for(user)] == [kept]
    # The same few round trips for 3 sessions as for 60 (it was 2 and 8 per session).
    assert counted["list"][1] == counted["list"][2] <= 4, counted
    assert counted["end"][1] == counted["end"][2] <= 6, counted
