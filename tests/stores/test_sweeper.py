"""``SessionMiddleware(sweep_every=...)`` on the SQL stores (issue 25 item 6): started with the
app's lifespan and stopped with it, it deletes expired records and never a live one, one
sweeper per database at a time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncmy
import asyncpg  # type: ignore[import-untyped]
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionware import Key, SessionEvent, SessionMiddleware, SessionsSwept
from sessionware.stores import ABSENT
from sessionware.stores.mysql import MySQLSessionStore
from sessionware.stores.postgres import PostgresSessionStore
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.client import Reports, lifespan
from tests.factories import mysql as mysql_factory
from tests.factories import postgres as postgres_factory
from tests.stores.test_maintenance import FACTORIES, Tables

SHORT = timedelta(milliseconds=20)
KEY = Key.generate()


def twin(store: Any) -> Any:
    """A second store on the same database and table, as another process would have."""
    if isinstance(store, SQLiteSessionStore):
        return SQLiteSessionStore(store.path, table=store.table)
    if isinstance(store, PostgresSessionStore):
        return PostgresSessionStore.from_dsn(postgres_factory.DSN, table=store.table)
    assert isinstance(store, MySQLSessionStore)
    return MySQLSessionStore.from_dsn(mysql_factory.DSN, table=store.table)


@pytest.fixture(params=sorted(FACTORIES))
async def sql(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Tables]]:
    factory, tables = FACTORIES[request.param]
    async with factory.store() as store:
        await store.get("x")  # creates the tables
        yield store, tables(store)


async def counter(request: Request) -> Response:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse(str(request.session["n"]))


def app_sweeping(store: Any, events: Reports) -> Starlette:
    return Starlette(
        routes=[Route("/", counter)],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                key=KEY,
                sweep_every=SHORT,
                on_event=events,
            )
        ],
    )


def swept(events: list[SessionEvent]) -> list[SessionsSwept]:
    return [e for e in events if isinstance(e, SessionsSwept)]


async def until(events: Reports, count: int) -> None:
    """Wait (10 s at most) until ``count`` sweeps have reported."""
    await events.until(lambda found: len(swept(found)) >= count)


async def test_the_sweeper_runs_with_the_lifespan_and_removes_only_expired_rows(
    sql: tuple[Any, Tables],
) -> None:
    store, tables = sql
    expired = [f"old-{n}" for n in range(1_200)]  # more than one batch
    live = [f"live-{n}" for n in range(30)]
    await tables.fill(expired, live, [("ada", key, False) for key in expired[:5]])
    events = Reports()
    with TestClient(app_sweeping(twin(store), events), base_url="https://testserver") as client:
        events.wait(lambda found: any(e.deleted for e in swept(found)))
        assert client.get("/").text == "1"  # requests are served while it sweeps
        assert (await tables.keys())[0] >= set(live)
    done = swept(events)
    assert sum(e.deleted for e in done) == 1_205, done
    assert all(e.outcome == "swept" and e.seconds >= 0 for e in done)
    records, indexed = await tables.keys()
    assert set(live) <= records and not records & set(expired) and indexed == set()
    await asyncio.sleep(SHORT.total_seconds() * 3)
    assert swept(events) == done, "the sweeper stopped at shutdown"


@pytest.fixture(params=["postgres", "mysql"])
async def server_sql(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    factory, _ = FACTORIES[request.param]
    async with factory.store() as store:
        await store.get("x")
        yield store


async def test_a_sweep_never_deletes_a_record_a_write_kept_live(server_sql: Any) -> None:
    """Writers extend records in the moments they expire, while sweeps run back to back: every
    record whose extension was acknowledged is still there afterwards."""
    store = server_sql
    events = Reports()
    kept: list[str] = []
    lost: list[str] = []

    async def writer(n: int) -> None:
        rng = random.Random(n)
        for round in range(3):
            key = f"w{n}-{round}"
            version = await store.put(key, b'{"v":0}', timedelta(milliseconds=200), expect=ABSENT)
            assert version is not None
            await asyncio.sleep(rng.uniform(0.05, 0.35))  # around the moment it expires
            again = await store.put(key, b'{"v":1}', timedelta(hours=1), expect=version)
            (kept if again is not None else lost).append(key)

    async def writing() -> None:
        await asyncio.gather(*(writer(n) for n in range(30)))
        await asyncio.sleep(SHORT.total_seconds() * 3)  # sweeps after the last write

    app = app_sweeping(store, events)
    sent = await lifespan(app, writing)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert len(swept(events)) >= 3 and kept
    for key in kept:
        record = await store.get(key)
        assert record is not None and record.data == b'{"v":1}', key
    for key in lost:
        assert await store.get(key) is None, key
    assert all(e.outcome == "swept" for e in swept(events))


@asynccontextmanager
async def extending(store: Any, key: str) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A write in flight: a transaction of its own that has extended the live record ``key``
    by an hour and not committed yet; the context gives its commit."""
    if isinstance(store, PostgresSessionStore):
        conn = await asyncpg.connect(postgres_factory.DSN)
        try:
            async with conn.transaction():
                status = await conn.execute(
                    f"UPDATE {store.table} SET expires = clock_timestamp() + interval '1 hour'"
                    " WHERE key = $1 AND expires > clock_timestamp()",
                    key,
                )
                assert status == "UPDATE 1"
                yield lambda: asyncio.sleep(0)  # commits as the block ends
        finally:
            await conn.close()
        return
    conn = await asyncmy.connect(host="127.0.0.1", user="root", db="test", autocommit=False)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(
                f"UPDATE {store.table} SET expires = UTC_TIMESTAMP(6) + INTERVAL 1 HOUR"
                " WHERE `key` = %s AND expires > UTC_TIMESTAMP(6)",
                (key,),
            )
            assert cursor.rowcount == 1
            yield conn.commit
            await conn.commit()
    finally:
        conn.close()


async def test_a_sweep_keeps_a_record_whose_extension_commits_while_it_runs(
    server_sql: Any,
) -> None:
    """The record is expired for the sweep, but a request extended it just before and commits
    while the sweep runs: the sweep skips it (PostgreSQL) or waits for the commit and sees it
    is live (MariaDB), and never deletes it."""
    store = server_sql
    await store.put("doomed", b"{}", timedelta(milliseconds=500), expect=ABSENT)
    await store.put("kept", b'{"v":0}', timedelta(milliseconds=500), expect=ABSENT)
    events = Reports()

    async def during() -> None:
        async with extending(store, "kept") as commit:
            await asyncio.sleep(0.6)  # both records are past their first expiry now
            await events.until(lambda found: any(e.deleted for e in swept(found)), timeout=0.3)
            await commit()
        count = len(swept(events))
        await until(events, count + 2)

    await lifespan(app_sweeping(store, events), during)
    assert await store.get("doomed") is None
    assert await store.get("kept") is not None
    assert {e.outcome for e in swept(events)} == {"swept"}


async def test_two_sweepers_on_one_database_take_turns(sql: tuple[Any, Tables]) -> None:
    """While one holds the database's sweep lock, the other's sweep does nothing (``busy``);
    once it is free, the other sweeps."""
    store, tables = sql
    other = twin(store)
    await tables.fill([f"old-{n}" for n in range(10)], ["live"], [])
    events = Reports()
    try:
        async with store.sweep_lock() as held:
            assert held
            async with store.sweep_lock() as again:  # its own lock does not nest
                assert not again

            await lifespan(app_sweeping(other, events), lambda: until(events, 2))
            assert {e.outcome for e in swept(events)} == {"busy"}
            assert len((await tables.keys())[0]) == 11
        events.clear()
        await lifespan(app_sweeping(other, events), lambda: until(events, 1))
        assert swept(events)[0] == SessionsSwept("swept", 10, swept(events)[0].seconds)
        assert (await tables.keys())[0] == {"live"}
    finally:
        await other.aclose()


async def test_sweeps_overlap_never(sql: tuple[Any, Tables]) -> None:
    """Four sweepers (four stores, as four processes) sweeping at once: never two inside the
    lock together, and every expired row goes exactly once."""
    store, tables = sql
    await tables.fill([f"old-{n}" for n in range(3_000)], [], [])
    stores = [twin(store) for _ in range(4)]
    inside = 0
    most = 0

    def counting(one: Any) -> Any:
        clear = one.clear_expired

        async def clear_expired(**options: Any) -> int:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            try:
                deleted: int = await clear(**options)
                return deleted
            finally:
                inside -= 1

        one.clear_expired = clear_expired
        return one

    events = Reports()
    apps = [app_sweeping(counting(one), events) for one in stores]

    async def until_swept() -> None:
        await events.until(lambda found: sum(e.deleted for e in swept(found)) >= 3_000)

    try:
        await asyncio.gather(*(lifespan(app, until_swept) for app in apps))
    finally:
        for one in stores:
            await one.aclose()
    assert most == 1
    assert {e.outcome for e in swept(events)} <= {"swept", "busy"}
    assert sum(e.deleted for e in swept(events)) == 3_000
    assert (await tables.keys())[0] == set()
