"""What the SQL stores add to the record-store contract: the tables, migration, concurrency,
expiry, failures and housekeeping, checked through the stores and through the tables directly."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from sessionware import SessionAdmin
from sessionware.repository import Repository
from sessionware.stores.base import ABSENT, Record, SessionKey, StoreError
from sessionware.stores.postgres import PostgresSessionStore
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.factories import postgres as postgres_factory
from tests.factories import sqlite as sqlite_factory
from tests.services import free_port, require

TTL = timedelta(minutes=5)
DSN = postgres_factory.DSN
ENVELOPE = '{"v":1,"state":{"city":"Zürich"},"user":"ferris"}'
SQLStore = SQLiteSessionStore | PostgresSessionStore


class SQLiteRaw:
    """The store's tables through a connection of its own."""

    def __init__(self, path: str, table: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.t = table

    async def execute(self, sql: str, *args: Any) -> list[Any]:
        return self.conn.execute(re.sub(r"\$(\d)", r"?\1", sql.format(t=self.t)), args).fetchall()

    async def expire(self, table: str, column: str, value: str) -> None:
        await self.execute(f"UPDATE {table} SET expires = 0 WHERE {column} = $1", value)

    async def close(self) -> None:
        self.conn.close()


class PostgresRaw:
    def __init__(self, conn: Any, table: str) -> None:
        self.conn = conn
        self.t = table

    async def execute(self, sql: str, *args: Any) -> list[Any]:
        return [tuple(row) for row in await self.conn.fetch(sql.format(t=self.t), *args)]

    async def expire(self, table: str, column: str, value: str) -> None:
        sql = f"UPDATE {table} SET expires = now() - interval '1 second' WHERE {column} = $1"
        await self.conn.execute(sql, value)

    async def close(self) -> None:
        await self.conn.close()


async def open_raw(store: SQLStore) -> SQLiteRaw | PostgresRaw:
    if isinstance(store, SQLiteSessionStore):
        return SQLiteRaw(store.path, store.table)
    return PostgresRaw(await asyncpg.connect(DSN), store.table)


@pytest.fixture(params=["sqlite", "postgres"])
async def sql(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    factory = {"sqlite": sqlite_factory, "postgres": postgres_factory}[request.param]
    async with factory.store() as store:
        await store.get("x")  # creates the tables
        raw = await open_raw(store)
        try:
            yield store, raw
        finally:
            await raw.close()


async def test_create_if_absent_refuses_a_live_id(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    version = await store.put("a", ENVELOPE.encode(), TTL, expect=ABSENT)
    assert version is not None
    assert await store.put("a", b'{"v":1,"state":{}}', TTL, expect=ABSENT) is None
    assert await store.get("a") == Record(ENVELOPE.encode(), version)
    assert await raw.execute("SELECT data, version FROM {t}") == [(ENVELOPE, version)]


async def test_create_if_absent_replaces_an_expired_row(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    old = await store.put("a", b'{"n":1}', TTL, expect=ABSENT)
    await raw.expire(raw.t, "key", "a")
    assert await store.get("a") is None
    assert await store.touch("a", TTL) is False
    assert await store.put("a", b'{"n":2}', TTL, expect=old) is None  # expired: not replaced
    new = await store.put("a", b'{"n":3}', TTL, expect=ABSENT)
    assert new is not None and new != old  # a reader of the old row cannot write the new one
    assert await store.get("a") == Record(b'{"n":3}', new)


async def test_replace_only_at_the_version_read(sql: tuple[Any, Any]) -> None:
    store, _ = sql
    assert await store.put("nobody", b"{}", TTL, expect=1) is None
    first = await store.put("a", b'{"n":1}', TTL, expect=ABSENT)
    second = await store.put("a", b'{"n":2}', TTL, expect=first)
    assert second is not None and second != first
    assert await store.put("a", b'{"n":3}', TTL, expect=first) is None
    assert await store.get("a") == Record(b'{"n":2}', second)
    third = await store.put("a", b'{"n":4}', TTL, expect=second)
    assert third not in (None, first, second)


async def test_concurrent_replaces_of_one_version_let_exactly_one_win(
    sql: tuple[Any, Any],
) -> None:
    store, _ = sql
    version = await store.put("a", b"{}", TTL, expect=ABSENT)
    results = await asyncio.gather(
        *(store.put("a", f'{{"n":{i}}}'.encode(), TTL, expect=version) for i in range(8))
    )
    winners = [i for i, result in enumerate(results) if result is not None]
    assert len(winners) == 1
    record = await store.get("a")
    assert record == Record(f'{{"n":{winners[0]}}}'.encode(), results[winners[0]])


async def test_touch_extends_a_live_record_only(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    version = await store.put("a", b"{}", timedelta(seconds=30), expect=ABSENT)
    [(before,)] = await raw.execute("SELECT expires FROM {t}")
    assert await store.touch("a", timedelta(hours=1)) is True
    [(after,)] = await raw.execute("SELECT expires FROM {t}")
    assert after > before
    assert await store.get("a") == Record(b"{}", version)  # a touch is not a new version
    assert await store.touch("missing", TTL) is False


async def test_delete_removes_the_row(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    await store.put("a", b"{}", TTL, expect=ABSENT)
    await store.delete("a")
    await store.delete("a")
    assert await store.get("a") is None
    assert await raw.execute("SELECT key FROM {t}") == []


async def test_user_index_lists_live_members(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    await store.index_add("ferris", "a", TTL)
    await store.index_add("ferris", "b", TTL)
    await store.index_add("corro", "c", TTL)
    assert sorted(await store.index_members("ferris")) == ["a", "b"]
    await raw.expire(raw.t + "_users", "key", "a")
    assert await store.index_members("ferris") == ["b"]
    await store.index_add("ferris", "a", TTL)  # a second add moves the time
    assert sorted(await store.index_members("ferris")) == ["a", "b"]
    await store.index_remove("ferris", "a")
    await store.index_remove("ferris", "never")
    assert await store.index_members("ferris") == ["b"]
    assert await store.index_members("corro") == ["c"]
    assert await store.index_members("nobody") == []


async def test_user_index_stays_bounded_after_many_expired_adds(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    for i in range(40):
        await store.index_add("ferris", f"s{i}", TTL)
        await raw.expire(raw.t + "_users", "key", f"s{i}")
    await store.index_add("corro", "old", TTL)
    await raw.expire(raw.t + "_users", "key", "old")
    assert await raw.execute("SELECT key FROM {t}_users WHERE user_id = 'ferris'") == [("s39",)]
    await store.index_add("ferris", "s39", TTL)  # re-filed, not dropped as expired
    await store.index_add("ferris", "new", TTL)
    rows = await raw.execute("SELECT user_id, key FROM {t}_users ORDER BY user_id, key")
    assert rows == [("corro", "old"), ("ferris", "new"), ("ferris", "s39")]


async def test_clear_expired_deletes_expired_rows_of_both_tables(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    for key in ("live", "old1", "old2"):
        await store.put(key, b"{}", TTL, expect=ABSENT)
        await store.index_add("ferris", key, TTL)
    for key in ("old1", "old2"):
        await raw.expire(raw.t, "key", key)
    await raw.expire(raw.t + "_users", "key", "old1")
    assert await store.clear_expired() == 3
    assert await raw.execute("SELECT key FROM {t}") == [("live",)]
    assert sorted(await raw.execute("SELECT key FROM {t}_users")) == [("live",), ("old2",)]
    assert await store.clear_expired() == 0


async def test_a_driver_failure_names_the_operation_never_the_data(sql: tuple[Any, Any]) -> None:
    store, raw = sql
    await raw.execute("DROP TABLE {t}")
    with pytest.raises(StoreError) as info:
        await store.put("secret-id", b'{"secret":"value"}', TTL, expect=ABSENT)
    message = str(info.value)
    assert "failed to put" in message and info.value.__cause__ is not None
    assert "secret" not in message
    with pytest.raises(StoreError, match="failed to get"):
        await store.get("secret-id")


# -- migration of first-version tables ------------------------------------------------------

V1_SQLITE = [
    "CREATE TABLE {t} (key TEXT PRIMARY KEY, data TEXT,"
    " successor TEXT, expires REAL NOT NULL, user_id TEXT)",
    "CREATE INDEX {t}_expires ON {t} (expires)",
    "CREATE INDEX {t}_user ON {t} (user_id) WHERE user_id IS NOT NULL",
]
V1_POSTGRES = [
    "CREATE TABLE {t} (key TEXT PRIMARY KEY, data TEXT,"
    " successor TEXT, expires TIMESTAMPTZ NOT NULL, user_id TEXT)",
    "CREATE INDEX {t}_expires ON {t} (expires)",
    "CREATE INDEX {t}_user ON {t} (user_id) WHERE user_id IS NOT NULL",
]
LIVE_KEY = "A" * 64
TOMBSTONED_KEY = "B" * 64


async def fill_v1(raw: SQLiteRaw | PostgresRaw, ddl: list[str], later: str) -> None:
    """A table as the first version left it: a live session, a renewed key's tombstone."""
    for statement in ddl:
        await raw.execute(statement)
    insert = (
        "INSERT INTO {t} (key, data, successor, expires, user_id)"
        f" VALUES ($1, $2, $3, {later}, $4)"
    )
    await raw.execute(insert, LIVE_KEY, ENVELOPE, None, "ferris")
    await raw.execute(insert, TOMBSTONED_KEY, None, LIVE_KEY, None)


@pytest.fixture(params=["sqlite", "postgres"])
async def v1(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Any, SQLiteRaw | PostgresRaw, Any]]:
    """A filled first-version table, a function opening a store on it, and the table's raw view."""
    raw: SQLiteRaw | PostgresRaw
    if request.param == "sqlite":
        path = str(tmp_path / "s.db")
        raw = SQLiteRaw(path, "sessions")
        await fill_v1(raw, V1_SQLITE, str(time.time() + 3600))
        open_store: Any = lambda: SQLiteSessionStore(path)  # noqa: E731
    else:
        require("PostgreSQL", "127.0.0.1", 5432)
        table = f"sessionware_test_{uuid.uuid4().hex}"
        raw = PostgresRaw(await asyncpg.connect(DSN), table)
        await fill_v1(raw, V1_POSTGRES, "now() + interval '1 hour'")
        open_store = lambda: PostgresSessionStore.from_dsn(DSN, table=table)  # noqa: E731
    store = open_store()
    try:
        yield store, raw, open_store
    finally:
        await store.aclose()
        if isinstance(raw, PostgresRaw):
            await raw.execute("DROP TABLE IF EXISTS {t}, {t}_users")
        await raw.close()


async def test_a_v1_table_is_migrated_in_place(v1: tuple[Any, Any, Any]) -> None:
    store, raw, open_store = v1
    record = await store.get(LIVE_KEY)  # the clear key is the id, as the repository's fallback
    assert record == Record(ENVELOPE.encode(), 1)
    assert await store.get(TOMBSTONED_KEY) is None
    assert await raw.execute("SELECT key, successor, user_id FROM {t}") == [
        (LIVE_KEY, None, "ferris")  # the tombstone went; the old columns stay, unused
    ]
    assert await store.index_members("ferris") == []  # v1 user ids are not copied
    assert await raw.execute("SELECT count(*) FROM {t}_users") == [(0,)]
    version = await store.put(LIVE_KEY, b'{"v":1,"state":{}}', TTL, expect=1)
    assert version not in (None, 1)
    assert await store.put("c" * 64, b"{}", TTL, expect=ABSENT) is not None
    assert await raw.execute("SELECT successor, user_id FROM {t} WHERE key = $1", "c" * 64) == [
        (None, None)  # new rows leave the old columns empty
    ]
    again = open_store()  # a second open finds the table migrated, and keeps it
    assert await again.get(LIVE_KEY) == Record(b'{"v":1,"state":{}}', version)
    await again.aclose()


async def test_the_repository_moves_a_migrated_v1_session(v1: tuple[Any, Any, Any]) -> None:
    store, _, _ = v1
    repository = Repository(store)
    loaded = await repository.load(SessionKey(LIVE_KEY), TTL)
    assert loaded is not None and dict(loaded.state) == {"city": "Zürich"}
    id = repository.id_of(LIVE_KEY)
    moved = await store.get(id)
    assert moved is not None and moved.data == ENVELOPE.encode()
    left = await store.get(LIVE_KEY)
    assert left is not None and left.data.startswith(b'{"v":0,')  # now a tombstone
    assert await store.index_members("ferris") == [id]  # filed again, under its new id
    assert [info.id for info in await SessionAdmin(store).sessions_for("ferris")] == [id]


@pytest.mark.parametrize("driver", ["sqlite", "postgres"])
async def test_a_table_older_than_user_id_gains_version(driver: str, tmp_path: Path) -> None:
    raw: SQLiteRaw | PostgresRaw
    if driver == "sqlite":
        path = str(tmp_path / "s.db")
        raw, column, later = SQLiteRaw(path, "sessions"), "REAL", str(time.time() + 60)
        open_store: Any = lambda: SQLiteSessionStore(path)  # noqa: E731
    else:
        require("PostgreSQL", "127.0.0.1", 5432)
        table = f"sessionware_test_{uuid.uuid4().hex}"
        raw = PostgresRaw(await asyncpg.connect(DSN), table)
        column, later = "TIMESTAMPTZ", "now() + interval '1 minute'"
        open_store = lambda: PostgresSessionStore.from_dsn(DSN, table=table)  # noqa: E731
    try:
        await raw.execute(
            f"CREATE TABLE {{t}} (key TEXT PRIMARY KEY, data TEXT, successor TEXT,"
            f" expires {column} NOT NULL)"
        )
        await raw.execute(f"INSERT INTO {{t}} VALUES ('k', $1, NULL, {later})", "{}")
        for _ in range(2):  # the second store finds the column there
            store = open_store()
            try:
                assert await store.get("k") == Record(b"{}", 1)
                assert await store.put("new", b"{}", TTL, expect=ABSENT) is not None
            finally:
                await store.aclose()
            await raw.execute("DELETE FROM {t} WHERE key = 'new'")
    finally:
        if isinstance(raw, PostgresRaw):
            await raw.execute("DROP TABLE IF EXISTS {t}, {t}_users")
        await raw.close()


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


def test_postgres_table_names_leave_room_for_the_index_table() -> None:
    PostgresSessionStore(None, table="x" * 57)
    with pytest.raises(ValueError, match="at most 57"):
        PostgresSessionStore(None, table="x" * 58)


def test_hash_keys_is_kept_for_the_repository(tmp_path: Path) -> None:
    assert SQLiteSessionStore(tmp_path / "s.db").hash_keys is True
    assert SQLiteSessionStore(tmp_path / "s.db", hash_keys=False).hash_keys is False
    assert PostgresSessionStore(None).hash_keys is True
    assert PostgresSessionStore.from_dsn(DSN, hash_keys=False).hash_keys is False


# -- SQLite ---------------------------------------------------------------------------------


async def test_sqlite_expiry_follows_the_injected_clock(tmp_path: Path) -> None:
    now = 1_000_000.0
    with pytest.warns(DeprecationWarning, match="clock"):  # a store's TTL clock: deprecated
        store = SQLiteSessionStore(tmp_path / "s.db", clock=lambda: now)
    try:
        version = await store.put("a", b"{}", timedelta(seconds=60), expect=ABSENT)
        await store.index_add("ferris", "a", timedelta(seconds=60))
        now += 59
        assert await store.get("a") == Record(b"{}", version)
        assert await store.index_members("ferris") == ["a"]
        assert await store.touch("a", timedelta(seconds=60)) is True  # now until +119
        now += 59
        assert await store.get("a") is not None
        assert await store.index_members("ferris") == []
        now += 2
        assert await store.get("a") is None
        assert await store.touch("a", TTL) is False
        assert await store.put("a", b"{}", TTL, expect=version) is None
        assert await store.put("a", b'{"n":1}', TTL, expect=ABSENT) is not None
        assert await store.clear_expired() == 1  # the index entry
    finally:
        await store.aclose()


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
            await store.put(f"k{i}", b"{}", TTL, expect=ABSENT)
    finally:
        done = True
        await task
        await store.aclose()
    assert ticks >= 100


async def test_sqlite_is_in_wal_mode_and_fails_cleanly_when_closed(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "s.db", table="other")
    await store.put("a", b"{}", TTL, expect=ABSENT)
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM other").fetchone()[0] == 1
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"other", "other_expires", "other_users", "other_users_expires"} <= names
    conn.close()
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.get("a")
    with pytest.raises(StoreError, match="closed"):
        await store.put("b", b"{}", TTL, expect=ABSENT)


async def test_sqlite_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteSessionStore(tmp_path / "missing" / "s.db")
    with pytest.raises(StoreError, match="SQLite store failed to get") as info:
        await store.get("a")
    assert isinstance(info.value.__cause__, sqlite3.Error)
    with pytest.raises(StoreError, match="failed to add to the user index"):
        await store.index_add("ferris", "a", TTL)
    await store.aclose()


def _count_up(path: str, worker: int, barrier: Any) -> None:
    """25 compare-and-set increments of one shared counter, retried on conflict."""

    async def run() -> None:
        store = SQLiteSessionStore(path)
        await store.index_add(f"w{worker}", "x", TTL)  # every process creates-if-missing
        barrier.wait()
        for _ in range(25):
            while True:
                record = await store.get("counter")
                assert record is not None
                n = int(record.data) + 1
                if await store.put("counter", str(n).encode(), TTL, expect=record.version):
                    break
        await store.aclose()

    asyncio.run(run())


async def test_sqlite_several_processes_lose_no_update(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SQLiteSessionStore(path)
    await store.put("counter", b"0", TTL, expect=ABSENT)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    workers = [ctx.Process(target=_count_up, args=(path, w, barrier)) for w in range(4)]
    for process in workers:
        process.start()
    await asyncio.to_thread(lambda: [process.join(60) for process in workers])
    assert [process.exitcode for process in workers] == [0] * 4
    record = await store.get("counter")
    assert record is not None and record.data == b"100" and record.version == 101
    await store.aclose()


def _open_v1(path: str, barrier: Any) -> None:
    async def run() -> None:
        barrier.wait()
        store = SQLiteSessionStore(path)
        assert await store.get(LIVE_KEY) is not None
        await store.aclose()

    asyncio.run(run())


async def test_sqlite_processes_migrating_at_once_do_it_once(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    raw = SQLiteRaw(path, "sessions")
    await fill_v1(raw, V1_SQLITE, str(time.time() + 3600))
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    workers = [ctx.Process(target=_open_v1, args=(path, barrier)) for _ in range(4)]
    for process in workers:
        process.start()
    await asyncio.to_thread(lambda: [process.join(60) for process in workers])
    assert [process.exitcode for process in workers] == [0] * 4
    assert await raw.execute("SELECT key, version FROM {t}") == [(LIVE_KEY, 1)]
    await raw.close()


# -- PostgreSQL -----------------------------------------------------------------------------


async def test_postgres_expiry_is_the_database_clock() -> None:
    async with postgres_factory.store() as store:
        short = timedelta(seconds=1)
        version = await store.put("a", b"{}", short, expect=ABSENT)
        await store.index_add("ferris", "a", short)
        assert await store.get("a") == Record(b"{}", version)
        assert await store.touch("a", timedelta(seconds=2.5)) is True
        await asyncio.sleep(1.2)
        assert await store.get("a") is not None  # touched
        assert await store.index_members("ferris") == []
        await asyncio.sleep(1.5)
        assert await store.get("a") is None
        assert await store.touch("a", TTL) is False
        assert await store.put("a", b"{}", TTL, expect=version) is None
        assert await store.put("a", b'{"n":1}', TTL, expect=ABSENT) is not None


@pytest.mark.parametrize("holder_commits", [True, False])
async def test_postgres_replace_waits_for_a_concurrent_writer(holder_commits: bool) -> None:
    """The version is checked again on the row the other transaction leaves."""
    async with postgres_factory.store() as store:
        version = await store.put("a", b'{"n":0}', TTL, expect=ABSENT)
        holder, monitor = await asyncpg.connect(DSN), await asyncpg.connect(DSN)
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute(
                f"UPDATE {store.table} SET data = '{{\"n\":1}}', version = version + 1"
                " WHERE key = 'a'"
            )
            task = asyncio.create_task(store.put("a", b'{"n":2}', TTL, expect=version))
            deadline = time.monotonic() + 5
            while not await monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE $1",
                f"UPDATE {store.table} SET data%",
            ):
                assert time.monotonic() < deadline, "the put never waited for the row"
                await asyncio.sleep(0.01)
            assert not task.done()
            await (tx.commit() if holder_commits else tx.rollback())
            result = await task
        finally:
            await holder.close()
            await monitor.close()
        record = await store.get("a")
        if holder_commits:
            assert result is None and record is not None and record.data == b'{"n":1}'
        else:
            assert record == Record(b'{"n":2}', result) and result != version


async def test_postgres_index_add_skips_a_stale_entry_another_transaction_holds() -> None:
    """So two adds for one user never wait on each other (no deadlock between their prunes)."""
    async with postgres_factory.store() as store:
        await store.index_add("ferris", "old", TTL)
        users = f"{store.table}_users"
        holder = await asyncpg.connect(DSN)
        try:
            await holder.execute(f"UPDATE {users} SET expires = now() - interval '1 second'")
            tx = holder.transaction()
            await tx.start()
            await holder.execute(f"SELECT 1 FROM {users} WHERE key = 'old' FOR UPDATE")
            await asyncio.wait_for(store.index_add("ferris", "new", TTL), 2)
            await tx.commit()
            keys = await holder.fetch(f"SELECT key FROM {users} ORDER BY key")
            assert [row["key"] for row in keys] == ["new", "old"]  # skipped, not waited for
            await store.index_add("ferris", "new", TTL)
            keys = await holder.fetch(f"SELECT key FROM {users} ORDER BY key")
            assert [row["key"] for row in keys] == ["new"]  # the next add prunes it
        finally:
            await holder.close()


async def test_postgres_stores_opening_at_once_make_the_tables_once() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    table = f"sessionware_test_{uuid.uuid4().hex}"
    stores = [PostgresSessionStore.from_dsn(DSN, table=table, max_size=1) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(s.put(f"k{i}", b"{}", TTL, expect=ABSENT) for i, s in enumerate(stores))
        )
        assert None not in results
    finally:
        for s in stores:
            await s.aclose()
        conn = await asyncpg.connect(DSN)
        await conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
        await conn.close()


async def test_postgres_role_without_ddl_rights_uses_tables_made_for_it() -> None:
    async with postgres_factory.store() as made:
        await made.get("x")  # the owner makes the tables
        role = f"sessionware_test_{uuid.uuid4().hex[:16]}"
        admin = await asyncpg.connect(DSN)
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        try:
            await admin.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON {made.table}, {made.table}_users"
                f" TO {role}"
            )
            dsn = DSN.replace("postgres@", f"{role}@")
            store = PostgresSessionStore.from_dsn(dsn, table=made.table)
            try:
                assert await store.put("a", b"{}", TTL, expect=ABSENT) is not None
                await store.index_add("ferris", "a", TTL)
                assert await store.index_members("ferris") == ["a"]
            finally:
                await store.aclose()
            ddl = await admin.fetchval("SELECT has_schema_privilege($1, 'public', 'CREATE')", role)
            assert ddl is False  # the role really could not have made them
        finally:
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE {role}")
            await admin.close()


async def test_postgres_unreachable_fails_promptly() -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    store = PostgresSessionStore.from_dsn(dsn, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(StoreError, match="PostgreSQL store failed to get") as info:
        await store.get("a")
    assert info.value.__cause__ is not None
    with pytest.raises(StoreError, match="failed to put"):
        await store.put("a", b"{}", TTL, expect=ABSENT)
    with pytest.raises(StoreError, match="failed to touch"):
        await store.touch("a", TTL)
    with pytest.raises(StoreError, match="failed to list the user index"):
        await store.index_members("ferris")
    assert time.monotonic() - started < 5
    await store.aclose()


async def test_postgres_with_a_pool_you_own_and_a_schema_qualified_table() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    table = f"public.sessionware_test_{uuid.uuid4().hex}"
    pool = await asyncpg.create_pool(DSN, min_size=1, max_size=2)
    try:
        store = PostgresSessionStore(pool, table=table)
        await store.put("a", b"{}", TTL, expect=ABSENT)
        await store.index_add("ferris", "a", TTL)
        assert await store.index_members("ferris") == ["a"]
        await store.aclose()
        assert await pool.fetchval(f"SELECT count(*) FROM {table}_users") == 1  # pool still open
        with pytest.raises(StoreError, match="closed"):
            await store.get("a")
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
        await pool.close()
