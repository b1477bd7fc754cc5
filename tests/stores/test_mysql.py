"""What the MariaDB/MySQL store adds to the contract: its tables, the database clock, the DDL
guard, the index's bound, housekeeping, and a server that goes away and comes back."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncmy
import pytest

from sessionware.stores import ABSENT, StoreError, UserIndex
from sessionware.stores.mysql import MySQLSessionStore
from tests.factories import mysql as factory
from tests.services import free_port, require

TTL = timedelta(minutes=5)
SHORT = timedelta(milliseconds=400)


@pytest.fixture
async def store() -> AsyncIterator[MySQLSessionStore]:
    async with factory.store() as sessions:
        yield sessions


async def rows(store: MySQLSessionStore, sql: str, *args: Any, port: int = 3306) -> list[Any]:
    """Rows of ``sql`` (``{t}``: the store's table) on a connection of the test's own."""
    conn = await asyncmy.connect(host="127.0.0.1", port=port, user="root", db="test")
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql.format(t=store.table), args)
            return list(await cursor.fetchall())
    finally:
        conn.close()


async def test_tables_keep_ids_bytes_versions_and_expiry(store: MySQLSessionStore) -> None:
    version = await store.put("a" * 64, '{"s":"ü"}'.encode(), TTL, expect=ABSENT)
    [(key, data, stored_version, seconds)] = await rows(
        store,
        "SELECT `key`, data, version, TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), expires) FROM {t}",
    )
    assert (key, bytes(data), stored_version) == ("a" * 64, '{"s":"ü"}'.encode(), version)
    assert 298 <= seconds <= 300  # expiry on the database's clock
    indexes = await rows(store, "SHOW INDEX FROM {t} WHERE Column_name = 'expires'")
    assert indexes, "the expiry index is missing"
    assert store.hash_keys is True and isinstance(store, UserIndex)


async def test_sub_second_ttls_and_create_over_an_expired_row(store: MySQLSessionStore) -> None:
    first = await store.put("k", b'{"n":1}', SHORT, expect=ABSENT)
    assert await store.put("k", b'{"n":2}', SHORT, expect=ABSENT) is None
    await asyncio.sleep(SHORT.total_seconds() + 0.1)
    assert await store.get("k") is None
    assert await store.touch("k", TTL) is False
    assert await store.put("k", b'{"n":3}', TTL, expect=first) is None  # expired: gone
    second = await store.put("k", b'{"n":4}', TTL, expect=ABSENT)
    assert second is not None and second != first
    record = await store.get("k")
    assert record is not None and (record.data, record.version) == (b'{"n":4}', second)
    assert len(await rows(store, "SELECT 1 FROM {t}")) == 1  # replaced in place


async def test_two_stores_create_the_same_tables_at_once() -> None:
    require("MariaDB", "127.0.0.1", 3306)
    table = f"sessionware_test_{uuid.uuid4().hex[:24]}"
    stores = [MySQLSessionStore.from_dsn(factory.DSN, table=table) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(s.put(f"id{n}", b"{}", TTL, expect=ABSENT) for n, s in enumerate(stores))
        )
        assert all(version is not None for version in results)
        assert await stores[0].get("id3") is not None
    finally:
        for s in stores:
            await s.aclose()
        await factory.drop_tables(3306, table)


async def test_the_index_stays_bounded(store: MySQLSessionStore) -> None:
    for n in range(5):
        await store.index_add("ada", f"old{n}", SHORT)
    await store.index_add("bob", "b1", SHORT)
    await store.index_add("ada", "live", TTL)
    await store.index_add("ada", "live", TTL)  # a second add moves the time, adds no row
    assert len(await rows(store, "SELECT 1 FROM {t}_users WHERE `user` = 'ada'")) == 6
    await asyncio.sleep(SHORT.total_seconds() + 0.1)
    await store.index_add("ada", "new", TTL)  # drops ada's members past their time
    ada = await rows(store, "SELECT id FROM {t}_users WHERE `user` = 'ada' ORDER BY id")
    assert [row[0] for row in ada] == ["live", "new"]
    assert await store.index_members("bob") == []  # past its time, though not yet pruned
    await store.index_remove("ada", "live")
    assert await store.index_members("ada") == ["new"]


async def test_clear_expired(store: MySQLSessionStore) -> None:
    await store.put("short", b"{}", SHORT, expect=ABSENT)
    await store.put("long", b"{}", TTL, expect=ABSENT)
    await store.index_add("bob", "short", SHORT)
    await asyncio.sleep(SHORT.total_seconds() + 0.1)
    assert await store.clear_expired() == 2  # rows of both tables, as every SQL store counts
    assert [row[0] for row in await rows(store, "SELECT `key` FROM {t}")] == ["long"]
    assert await rows(store, "SELECT 1 FROM {t}_users") == []


async def test_a_pool_you_own() -> None:
    require("MariaDB", "127.0.0.1", 3306)
    table = f"sessionware_test_{uuid.uuid4().hex[:24]}"
    pool = await asyncmy.create_pool(host="127.0.0.1", user="root", db="test", autocommit=False)
    try:
        store = MySQLSessionStore(pool, table=table, hash_keys=False)
        version = await store.put("k", b"{}", TTL, expect=ABSENT)
        assert store.hash_keys is False
        await store.aclose()  # not its pool: stays open
        # Committed although the pool's connections do not autocommit.
        [(seen,)] = await rows(store, "SELECT version FROM {t}")
        assert seen == version
    finally:
        pool.close()
        await pool.wait_closed()
        await factory.drop_tables(3306, table)


async def test_found_rows_connections_are_refused() -> None:
    require("MariaDB", "127.0.0.1", 3306)
    table = f"sessionware_test_{uuid.uuid4().hex[:24]}"
    pool = await asyncmy.create_pool(host="127.0.0.1", user="root", db="test", client_flag=2)
    try:
        with pytest.raises(ValueError, match="FOUND_ROWS"):
            await MySQLSessionStore(pool, table=table).get("k")
    finally:
        pool.close()
        await pool.wait_closed()


def test_bad_configuration_fails_at_construction() -> None:
    for table in ("", "1abc", "a-b", "x" * 59, "a;DROP"):
        with pytest.raises(ValueError, match="table name"):
            MySQLSessionStore(None, table=table)
    MySQLSessionStore(None, table="test.sessions")
    for dsn in ("postgresql://h/db", "mysql://host", "mysql://host/"):
        with pytest.raises(ValueError, match="DSN"):
            MySQLSessionStore.from_dsn(dsn)
    store = MySQLSessionStore.from_dsn("mysql://u%40x:p%2Fw@db.example:3307/app")
    assert store._pool_options["user"] == "u@x" and store._pool_options["password"] == "p/w"
    assert (store._pool_options["host"], store._pool_options["port"]) == ("db.example", 3307)


async def test_no_server_is_a_store_error() -> None:
    store = MySQLSessionStore.from_dsn(f"mysql://root@127.0.0.1:{free_port()}/test")
    with pytest.raises(StoreError, match="failed to get") as caught:
        await store.get("k" * 64)
    assert "k" * 64 not in str(caught.value)
    await store.aclose()


async def test_server_stopped_and_restarted_mid_load() -> None:
    """While the server is down every call is a StoreError; once it is back the data is intact
    and the store works again."""
    with tempfile.TemporaryDirectory(prefix="sessionware-mariadb-") as directory:
        server = await factory.start_server(directory)
        store = MySQLSessionStore.from_dsn(server.dsn, connect_timeout=2)
        try:
            versions = {}
            for n in range(20):
                versions[f"id{n}"] = await store.put(f"id{n}", b'{"n":%d}' % n, TTL, expect=ABSENT)
            failures: list[BaseException] = []

            async def load() -> None:
                for n in range(200):
                    try:
                        await store.get(f"id{n % 20}")
                    except StoreError as exc:
                        failures.append(exc)
                    await asyncio.sleep(0.005)

            worker = asyncio.create_task(load())
            await asyncio.sleep(0.2)
            server.stop()
            await asyncio.sleep(0.3)  # the load meets the dead server
            with pytest.raises(StoreError):
                await store.put("id0", b"{}", TTL, expect=versions["id0"])
            with pytest.raises(StoreError):
                await store.get("id1")
            server.start()
            await worker
            assert failures and all(isinstance(f, StoreError) for f in failures)
            for _ in range(50):  # the pool drops its dead connections as it meets them
                try:
                    await store.get("id0")
                    break
                except StoreError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("the store did not recover after the server came back")
            for n in range(20):
                record = await store.get(f"id{n}")
                assert record is not None and record.data == b'{"n":%d}' % n
                assert record.version == versions[f"id{n}"]
            assert await store.put("id0", b"{}", TTL, expect=versions["id0"]) is not None
        finally:
            await store.aclose()
            server.stop()
