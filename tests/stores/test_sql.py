"""What the SQL stores add to the contract: the table itself, concurrency, failures, housekeeping."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from sessionware.state import StoredState
from sessionware.stores import Changes, LoadError, SaveError, SessionKey, UpdateError
from sessionware.stores.base import generate_session_key
from sessionware.stores.postgres import PostgresSessionStore
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.factories import postgres as postgres_factory
from tests.factories import sqlite as sqlite_factory
from tests.services import free_port, require

TTL = timedelta(minutes=5)
DSN = postgres_factory.DSN
SQLStore = SQLiteSessionStore | PostgresSessionStore


class SQLiteRaw:
    """The store's table through a connection of its own."""

    def __init__(self, store: SQLiteSessionStore) -> None:
        self.conn = sqlite3.connect(store.path, isolation_level=None)
        self.t = store.table

    async def data(self, key: str) -> Any:
        row = self.conn.execute(f"SELECT data FROM {self.t} WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    async def set_data(self, key: str, text: str) -> None:
        self.conn.execute(f"UPDATE {self.t} SET data = ? WHERE key = ?", (text, key))

    async def expire(self, key: str) -> None:
        self.conn.execute(f"UPDATE {self.t} SET expires = 0 WHERE key = ?", (key,))

    async def count(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.t}").fetchone()[0])

    async def close(self) -> None:
        self.conn.close()


class PostgresRaw:
    def __init__(self, store: PostgresSessionStore, conn: Any) -> None:
        self.conn = conn
        self.t = store.table

    async def data(self, key: str) -> Any:
        return await self.conn.fetchval(f"SELECT data FROM {self.t} WHERE key = $1", key)

    async def set_data(self, key: str, text: str) -> None:
        await self.conn.execute(f"UPDATE {self.t} SET data = $2 WHERE key = $1", key, text)

    async def expire(self, key: str) -> None:
        sql = f"UPDATE {self.t} SET expires = now() - interval '1 second' WHERE key = $1"
        await self.conn.execute(sql, key)

    async def count(self) -> int:
        return int(await self.conn.fetchval(f"SELECT count(*) FROM {self.t}"))

    async def close(self) -> None:
        await self.conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def sql(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    factory = {"sqlite": sqlite_factory, "postgres": postgres_factory}[request.param]
    async with factory.store() as store:
        await store.load(generate_session_key())  # creates the table
        if isinstance(store, SQLiteSessionStore):
            raw: Any = SQLiteRaw(store)
        else:
            raw = PostgresRaw(store, await asyncpg.connect(DSN))
        try:
            yield store, raw
        finally:
            await raw.close()


async def test_clear_expired_removes_expired_rows_and_tombstones(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    live = await store.save({"a": 1}, TTL)
    expired = await store.save({"b": 1}, TTL)
    await raw.expire(expired)
    purged = await store.save({"c": 1}, TTL)
    await store.delete(purged)
    await raw.expire(purged)
    await store.delete(generate_session_key())  # a tombstone still within TOMBSTONE_TTL
    assert await store.clear_expired() == 2
    assert await raw.count() == 2
    assert await store.load(live) == {"a": 1}
    assert await store.clear_expired() == 0


async def test_data_column_holds_the_v1_envelope(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    key = await store.save({"user": "ferris", "n": [1, 2]}, TTL)
    data = json.loads(await raw.data(key))
    assert data["v"] == 1 and data["state"] == {"user": "ferris", "n": [1, 2]}


async def test_actix_legacy_value_loads(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    key = await store.save({}, TTL)
    await raw.set_data(key, '{"counter":"100","user_id":"\\"ferris\\""}')
    assert await store.load(key) == {"counter": 100, "user_id": "ferris"}


async def test_garbage_data_is_a_deserialization_error(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    key = await store.save({"a": 1}, TTL)
    await raw.set_data(key, "not json {")
    with pytest.raises(LoadError) as info:
        await store.load(key)
    assert info.value.deserialization
    with pytest.raises(UpdateError) as update_info:
        await store.update(key, {"a": 2}, TTL, Changes(set={"a": 2}))
    assert not update_info.value.serialization


async def test_unencodable_state_is_a_serialization_error(sql: tuple[Any, Any]) -> None:
    store, _ = sql
    with pytest.raises(SaveError) as info:
        await store.save({"x": float("nan")}, TTL)
    assert info.value.serialization
    key = await store.save({"a": 1}, TTL)
    with pytest.raises(UpdateError) as update_info:
        await store.update(key, {"x": {1, 2}}, TTL, Changes(set={"x": {1, 2}}))
    assert update_info.value.serialization
    assert await store.load(key) == {"a": 1}


async def test_concurrent_updates_of_different_keys_are_all_kept(sql: tuple[Any, Any]) -> None:
    store, _ = sql
    key = await store.save({"base": 0}, TTL)
    results = await asyncio.gather(
        *(store.update(key, {f"k{i}": i}, TTL, Changes(set={f"k{i}": i})) for i in range(10))
    )
    assert results == [key] * 10
    assert await store.load(key) == {"base": 0, **{f"k{i}": i for i in range(10)}}


async def test_purge_tombstone_beats_a_late_update(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    key = await store.save({"a": 1}, TTL)
    await store.delete(key)
    assert await raw.data(key) is None
    assert await store.update(key, {"a": 2}, TTL) is None
    never_saved = generate_session_key()
    await store.delete(never_saved)
    assert await store.update(never_saved, {"a": 2}, TTL, Changes(set={"a": 2})) is None
    assert await raw.count() == 2


async def test_purge_follows_renewals_and_stops_at_loops(sql: tuple[Any, Any]) -> None:
    store, _ = sql
    first, second = [await store.save({"n": i}, TTL) for i in range(2)]
    third = await store.save(StoredState({"n": 2}, user="ferris"), TTL)
    await store.delete(first, successor=second)
    await store.delete(second, successor=third)
    await store.delete(first, successor=generate_session_key())  # the first renewal stays
    await store.delete(first)
    assert await store.load(third) is None
    assert await store.sessions_for("ferris") == []
    assert await store.update(first, {"n": 0}, TTL, Changes(set={"x": 1})) is None
    a, b = generate_session_key(), generate_session_key()
    await store.delete(a, successor=b)
    await store.delete(b, successor=a)
    await store.delete(a)  # a cycle ends after a bounded number of hops


async def test_update_ttl_leaves_tombstones_alone(sql: tuple[Any, Any]) -> None:
    store, _ = sql
    key = await store.save({"a": 1}, TTL)
    await store.delete(key)
    await store.update_ttl(key, TTL)
    assert await store.load(key) is None


@pytest.mark.parametrize(
    "table", ["sessions'", "my sessions", 'a"b', "s;drop table x", "", "1abc", "x" * 64, "a-b"]
)
def test_bad_table_names_are_rejected(table: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="table name"):
        SQLiteSessionStore(tmp_path / "s.db", table=table)
    with pytest.raises(ValueError, match="table name"):
        PostgresSessionStore.from_dsn(DSN, table=table)
    with pytest.raises(ValueError, match="table name"):
        PostgresSessionStore(None, table=f"public.{table}")


# -- SQLite ---------------------------------------------------------------------------------


async def test_sqlite_does_not_block_the_event_loop(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "s.db")
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        for i in range(200):
            await store.save({"i": i}, TTL)
    finally:
        done = True
        await task
        await store.aclose()
    assert ticks >= 100


async def test_sqlite_is_in_wal_mode_and_fails_cleanly_when_closed(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "s.db", table="other")
    key = await store.save({"a": 1}, TTL)
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM other").fetchone()[0] == 1
    conn.close()
    await store.aclose()
    with pytest.raises(LoadError):
        await store.load(key)
    with pytest.raises(SaveError):
        await store.save({}, TTL)


async def test_sqlite_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "missing" / "s.db")
    with pytest.raises(LoadError) as info:
        await store.load(generate_session_key())
    assert not info.value.deserialization
    with pytest.raises(SaveError):
        await store.save({}, TTL)
    await store.aclose()


def _hammer(path: str, key: str, worker: int, barrier: Any) -> None:
    async def run() -> None:
        store = SQLiteSessionStore(path)
        barrier.wait()
        for i in range(25):
            name = f"w{worker}_{i}"
            assert await store.update(SessionKey(key), {}, TTL, Changes(set={name: i})) == key
        await store.aclose()

    asyncio.run(run())


async def test_sqlite_several_processes_lose_no_update(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SQLiteSessionStore(path)
    key = await store.save({}, TTL)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    workers = [ctx.Process(target=_hammer, args=(path, key, w, barrier)) for w in range(4)]
    for process in workers:
        process.start()
    await asyncio.to_thread(lambda: [process.join(30) for process in workers])
    assert [process.exitcode for process in workers] == [0] * 4
    loaded = await store.load(key)
    assert loaded == {f"w{w}_{i}": i for w in range(4) for i in range(25)}
    await store.aclose()


# -- PostgreSQL -----------------------------------------------------------------------------


async def test_postgres_update_waits_for_the_row_lock() -> None:
    async with postgres_factory.store() as store:
        key = await store.save({"a": 0}, TTL)
        holder, monitor = await asyncpg.connect(DSN), await asyncpg.connect(DSN)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute(f"SELECT 1 FROM {store.table} WHERE key = $1 FOR UPDATE", key)
            task = asyncio.create_task(store.update(key, {"b": 2}, TTL, Changes(set={"b": 2})))
            deadline = time.monotonic() + 5
            while not await monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE $1",
                f"%{store.table}%FOR UPDATE%",
            ):
                assert time.monotonic() < deadline, "the update never waited for the lock"
                await asyncio.sleep(0.01)
            assert not task.done()
            data = '{"v":1,"state":{"a":1}}'
            await holder.execute(f"UPDATE {store.table} SET data = $2 WHERE key = $1", key, data)
            await tx.commit()
            assert await task == key
        finally:
            await holder.close()
            await monitor.close()
        assert await store.load(key) == {"a": 1, "b": 2}


async def test_postgres_renewal_keeps_a_tombstone_committed_after_its_lock() -> None:
    """The row lock finds no row to lock: the upsert itself must not replace a new tombstone."""
    async with postgres_factory.store() as store:
        old, first, second = (generate_session_key() for _ in range(3))
        await store.load(old)  # creates the table
        holder, monitor = await asyncpg.connect(DSN), await asyncpg.connect(DSN)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute(
                f"INSERT INTO {store.table} (key, successor, expires)"
                " VALUES ($1, $2, now() + interval '5 minutes')",
                old,
                first,
            )
            task = asyncio.create_task(store.delete(old, successor=second))
            deadline = time.monotonic() + 5
            while not await monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE $1",
                f"INSERT INTO {store.table}%",
            ):
                assert time.monotonic() < deadline, "the delete never waited for the row"
                await asyncio.sleep(0.01)
            await tx.commit()
            await task
            row = await monitor.fetchrow(
                f"SELECT data, successor FROM {store.table} WHERE key = $1", old
            )
        finally:
            await holder.close()
            await monitor.close()
        assert (row["data"], row["successor"]) == (None, first)


async def test_postgres_unreachable_fails_promptly() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    store = PostgresSessionStore.from_dsn(dsn, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(LoadError) as info:
        await store.load(generate_session_key())
    assert not info.value.deserialization and info.value.__cause__ is not None
    with pytest.raises(SaveError):
        await store.save({"a": 1}, TTL)
    with pytest.raises(UpdateError):
        await store.update(generate_session_key(), {"a": 1}, TTL)
    with pytest.raises(UpdateError):
        await store.delete(generate_session_key())
    assert time.monotonic() - started < 5
    await store.aclose()


async def test_postgres_with_a_pool_you_own_and_a_schema_qualified_table() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    table = f"public.sessionware_test_{uuid.uuid4().hex}"
    pool = await asyncpg.create_pool(DSN, min_size=1, max_size=2)
    try:
        store = PostgresSessionStore(pool, table=table)
        key = await store.save({"a": 1}, TTL)
        assert await store.load(key) == {"a": 1}
        await store.aclose()
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 1  # pool still open
        with pytest.raises(LoadError):
            await store.load(key)
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}")
        await pool.close()
