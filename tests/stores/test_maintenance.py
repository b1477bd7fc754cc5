"""``clear_expired`` on the SQL stores never holds up a request (issue 30 item 4), deletes exactly
the expired rows, and finds them through the expires index.

Order, not time: a read and a write started while a clear of 100,000 expired records runs
complete before the clear does. The stalls themselves are measured in
benchmarks/bench_maintenance.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

import asyncmy
import asyncpg  # type: ignore[import-untyped]
import pytest

from sessionware.stores import ABSENT
from sessionware.stores.mysql import MySQLSessionStore
from sessionware.stores.postgres import PostgresSessionStore
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.factories import mysql as mysql_factory
from tests.factories import postgres as postgres_factory
from tests.factories import sqlite as sqlite_factory
from tests.services import require

TTL = timedelta(hours=1)
EXPIRED = 100_000
INDEXED = 10_000
DATA = '{"v":1,"state":{"n":0}}'


class Tables(Protocol):
    """A store's two tables, filled and read on a connection of the test's own."""

    async def fill(
        self, expired: list[str], live: list[str], entries: list[tuple[str, str, bool]]
    ) -> None:
        """Records ``expired`` (the last one expiring last) and ``live``, and user-index
        entries ``(user, key, live?)``, written straight into the tables."""

    async def keys(self) -> tuple[set[str], set[str]]:
        """The ids of every record, and of every index entry, left in the tables."""


def past(n: int, count: int) -> float:
    """Seconds before now at which expired row ``n`` of ``count`` expired: later as n grows."""
    return 60 + 3600 * (count - n) / count


class SQLiteTables:
    def __init__(self, store: Any) -> None:
        self.path, self.t = store.path, store.table

    async def fill(
        self, expired: list[str], live: list[str], entries: list[tuple[str, str, bool]]
    ) -> None:
        now = time.time()
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO {self.t} (key, data, version, expires) VALUES (?, ?, 1, ?)",
                [(k, DATA, now - past(n, len(expired))) for n, k in enumerate(expired)]
                + [(k, DATA, now + 3600) for k in live],
            )
            conn.executemany(
                f"INSERT INTO {self.t}_users (user_id, key, expires) VALUES (?, ?, ?)",
                [
                    (user, k, now + 3600 if alive else now - past(n, len(entries)))
                    for n, (user, k, alive) in enumerate(entries)
                ],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def keys(self) -> tuple[set[str], set[str]]:
        conn = sqlite3.connect(self.path)
        try:
            records = {row[0] for row in conn.execute(f"SELECT key FROM {self.t}")}
            entries = {row[0] for row in conn.execute(f"SELECT key FROM {self.t}_users")}
        finally:
            conn.close()
        return records, entries


class PostgresTables:
    def __init__(self, store: Any) -> None:
        self.t = store.table

    async def fill(
        self, expired: list[str], live: list[str], entries: list[tuple[str, str, bool]]
    ) -> None:
        conn = await asyncpg.connect(postgres_factory.DSN)
        try:
            now = await conn.fetchval("SELECT clock_timestamp()")
            records = [
                (k, DATA, 1, now - timedelta(seconds=past(n, len(expired))))
                for n, k in enumerate(expired)
            ]
            records += [(k, DATA, 1, now + TTL) for k in live]
            await conn.copy_records_to_table(
                self.t, records=records, columns=["key", "data", "version", "expires"]
            )
            rows = [
                (user, k, now + TTL if alive else now - timedelta(seconds=past(n, len(entries))))
                for n, (user, k, alive) in enumerate(entries)
            ]
            await conn.copy_records_to_table(
                f"{self.t}_users", records=rows, columns=["user_id", "key", "expires"]
            )
            await conn.execute(f"ANALYZE {self.t}, {self.t}_users")
        finally:
            await conn.close()

    async def keys(self) -> tuple[set[str], set[str]]:
        conn = await asyncpg.connect(postgres_factory.DSN)
        try:
            records = {row[0] for row in await conn.fetch(f"SELECT key FROM {self.t}")}
            entries = {row[0] for row in await conn.fetch(f"SELECT key FROM {self.t}_users")}
        finally:
            await conn.close()
        return records, entries


class MySQLTables:
    def __init__(self, store: Any) -> None:
        self.t = store.table

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[Any]:
        conn = await asyncmy.connect(host="127.0.0.1", user="root", db="test", autocommit=True)
        try:
            async with conn.cursor() as cursor:
                yield cursor
        finally:
            conn.close()

    async def fill(
        self, expired: list[str], live: list[str], entries: list[tuple[str, str, bool]]
    ) -> None:
        async with self._cursor() as cursor:
            await cursor.execute("SELECT UTC_TIMESTAMP(6)")
            [(now,)] = await cursor.fetchall()
            records = [
                (k, DATA, n, now - timedelta(seconds=past(n, len(expired))))
                for n, k in enumerate(expired)
            ]
            records += [(k, DATA, n, now + TTL) for n, k in enumerate(live)]
            rows = [
                (user, k, now + TTL if alive else now - timedelta(seconds=past(n, len(entries))))
                for n, (user, k, alive) in enumerate(entries)
            ]
            for sql, values in (
                (
                    f"INSERT INTO {self.t} (`key`, data, version, expires) VALUES (%s,%s,%s,%s)",
                    records,
                ),
                (f"INSERT INTO {self.t}_users (`user`, id, expires) VALUES (%s, %s, %s)", rows),
            ):
                for start in range(0, len(values), 10_000):  # multi-row INSERTs
                    await cursor.executemany(sql, values[start : start + 10_000])

    async def keys(self) -> tuple[set[str], set[str]]:
        async with self._cursor() as cursor:
            await cursor.execute(f"SELECT `key` FROM {self.t}")
            records = {row[0] for row in await cursor.fetchall()}
            await cursor.execute(f"SELECT id FROM {self.t}_users")
            entries = {row[0] for row in await cursor.fetchall()}
        return records, entries


FACTORIES = {
    "sqlite": (sqlite_factory, SQLiteTables),
    "postgres": (postgres_factory, PostgresTables),
    "mysql": (mysql_factory, MySQLTables),
}


@pytest.fixture(params=sorted(FACTORIES))
async def sql(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Tables]]:
    factory, tables = FACTORIES[request.param]
    async with factory.store() as store:
        await store.get("x")  # creates the tables
        yield store, tables(store)


async def test_requests_complete_while_a_clear_of_100k_rows_runs(
    sql: tuple[Any, Tables],
) -> None:
    """A read, a write and a record made live again, all started after the clear's first
    batch, complete before the clear does; the clear deletes exactly the expired rows."""
    store, tables = sql
    expired = [f"old-{n}" for n in range(EXPIRED)]
    live = [f"live-{n}" for n in range(50)]
    revived = expired[-1]  # expires last of all, so the clear reaches it last
    entries = [(f"user-{n}", key, False) for n, key in enumerate(expired[-INDEXED:-1])]
    entries += [("ferris", revived, False)] + [("ada", key, True) for key in live]
    await tables.fill(expired, live, entries)

    started = asyncio.Event()
    clear = asyncio.create_task(store.clear_expired(on_batch=lambda deleted: started.set()))
    await started.wait()
    read = await store.get(live[0])
    written = await store.put("new", b"{}", TTL, expect=ABSENT)
    again = await store.put(revived, b'{"n":1}', TTL, expect=ABSENT)
    await store.index_add("ferris", revived, TTL)
    assert not clear.done(), "the requests waited for the clear to finish"
    deleted = await clear

    assert read is not None and read.data == DATA.encode()
    assert written is not None and again is not None
    records, indexed = await tables.keys()
    assert records == {*live, "new", revived}
    assert indexed == {*live, revived}
    assert deleted == (EXPIRED - 1) + (INDEXED - 1)
    record = await store.get(revived)
    assert record is not None and json.loads(record.data) == {"n": 1}
    assert await store.index_members("ferris") == [revived]
    assert await store.clear_expired() == 0


async def test_clear_expired_reports_each_batch(sql: tuple[Any, Tables]) -> None:
    store, tables = sql
    expired = [f"old-{n}" for n in range(7)]
    await tables.fill(expired, ["live"], [("ada", key, False) for key in expired[:3]])
    progress: list[int] = []
    assert await store.clear_expired(batch_size=3, on_batch=progress.append) == 10
    assert progress == [3, 6, 7, 10]  # records in batches of 3, then the index's 3 (a full batch)
    assert await tables.keys() == ({"live"}, set())
    with pytest.raises(ValueError, match="batch_size must be a whole number of rows, at least 1"):
        await store.clear_expired(batch_size=0)


class Recording(asyncpg.Connection):  # type: ignore[misc]
    """Keeps every statement run through ``execute`` or ``fetchval``, with its arguments."""

    statements: ClassVar[list[tuple[str, tuple[Any, ...]]]] = []

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        Recording.statements.append((query, args))
        return await super().execute(query, *args, timeout=timeout)

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        Recording.statements.append((query, args))
        return await super().fetchval(query, *args, column=column, timeout=timeout)


def plan_nodes(plan: Any) -> list[dict[str, Any]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan, init plans and subplans included."""
    nodes, todo = [], [json.loads(plan)[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


def literal(value: Any) -> str:
    return f"'{value.isoformat()}'" if isinstance(value, datetime) else str(int(value))


@pytest.mark.parametrize("plans", ["force_custom_plan", "force_generic_plan"])
async def test_postgres_clear_expired_finds_rows_through_the_expires_index(plans: str) -> None:
    """Issue 30 item 4: ``expires <= clock_timestamp()`` (volatile) made every clear a
    sequential scan. The statements the store runs use the expires indexes, whether
    PostgreSQL plans them for their arguments or once for all (a cached generic plan)."""
    require("PostgreSQL", "127.0.0.1", 5432)
    Recording.statements.clear()
    table = f"sessionware_test_{uuid.uuid4().hex}"
    pool = await asyncpg.create_pool(
        postgres_factory.DSN, min_size=1, max_size=2, connection_class=Recording
    )
    try:
        store = PostgresSessionStore(pool, table=table)
        await store.get("x")
        live = [f"live-{n}" for n in range(20_000)]
        entries = [("ada", key, True) for key in live] + [("bo", "old-1", False)]
        await PostgresTables(store).fill(["old-1", "old-2"], live, entries)
        assert await store.clear_expired() == 3
        deletes = dict((q, args) for q, args in Recording.statements if "DELETE" in q)
        used: set[str] = set()
        async with pool.acquire() as conn:
            indexes = await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename IN ($1, $2)"
                " AND indexdef LIKE '%(expires)'",
                table,
                f"{table}_users",
            )
            await conn.execute(f"SET plan_cache_mode = {plans}")
            for n, (query, args) in enumerate(deletes.items()):
                await conn.execute(f"PREPARE purge{n} AS {query}")
                values = f"({', '.join(literal(arg) for arg in args)})" if args else ""
                plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE purge{n}{values}")
                scans = {(node["Node Type"], node.get("Index Name")) for node in plan_nodes(plan)}
                assert not any(kind == "Seq Scan" for kind, _ in scans), (query, scans)
                used |= {index for kind, index in scans if kind == "Index Scan"}
            await conn.execute("DEALLOCATE ALL")
            await conn.execute("RESET plan_cache_mode")
        assert used == {row["indexname"] for row in indexes}
        assert len(deletes) == 2, deletes  # one statement a table, run batch after batch
    finally:
        await pool.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
        await pool.close()


async def test_mysql_clear_expired_deletes_through_the_expires_index() -> None:
    """MariaDB's one big DELETE held writes for 379 ms; each batch the store runs is a range scan
    of an expires index in its order (no filesort, no full scan)."""
    require("MariaDB", "127.0.0.1", 3306)
    table = f"sessionware_test_{uuid.uuid4().hex[:24]}"
    ran: list[str] = []
    store = MySQLSessionStore.from_dsn(
        mysql_factory.DSN, table=table, query_callback=lambda cursor, sql, ms: ran.append(sql)
    )
    try:
        await store.get("x")
        live = [f"live-{n}" for n in range(2_000)]
        await MySQLTables(store).fill(["old"], live, [("ada", "old", False)])
        assert await store.clear_expired() == 2
        deletes = [sql for sql in ran if sql.startswith("DELETE")]
        assert len(deletes) == 2, ran
        conn = await asyncmy.connect(host="127.0.0.1", user="root", db="test")
        try:
            async with conn.cursor() as cursor:
                for sql, index in zip(deletes, ("_expires", "_u_exp"), strict=True):
                    await cursor.execute(f"EXPLAIN {sql}")
                    columns = [d[0] for d in cursor.description]
                    [row] = [dict(zip(columns, r, strict=True)) for r in await cursor.fetchall()]
                    assert row["type"] == "range" and row["key"].endswith(index), (sql, row)
                    assert "filesort" not in (row["Extra"] or ""), (sql, row)
        finally:
            conn.close()
    finally:
        await store.aclose()
        await mysql_factory.drop_tables(3306, table)


async def test_sqlite_in_memory_clears_on_its_one_connection() -> None:
    """An in-memory database lives on one connection: maintenance may not open another."""
    now = 1_000_000.0
    with pytest.warns(DeprecationWarning, match="clock"):  # a TTL clock the test moves
        store = SQLiteSessionStore(":memory:", clock=lambda: now)
    try:
        await store.put("short", b"{}", timedelta(seconds=1), expect=ABSENT)
        await store.put("long", b"{}", TTL, expect=ABSENT)
        now += 2
        assert await store.clear_expired() == 1
        assert await store.get("long") is not None
        assert await store.put("short", b"{}", TTL, expect=ABSENT) == 1  # a new record
    finally:
        await store.aclose()
