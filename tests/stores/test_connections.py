"""How the server-side stores hold connections, time out and report health, on the real servers
(issue 28): one store made outside any event loop serves every loop that calls it (item 9), a
row another transaction holds is a StoreError within the store's timeout (item 6), and
``check()`` is one round trip that names the server and the cause (item 15).

The tests of item 9 are plain functions: the store is made outside any loop, as a module-level
store is, and each ``TestClient`` block (or thread) runs a loop of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncmy
import asyncpg  # type: ignore[import-untyped]
import emcache
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionware import Key, SessionMiddleware, get_session
from sessionware.stores import (
    ABSENT,
    CachedSessionStore,
    MemcachedSessionStore,
    MemorySessionStore,
    MigratingStore,
    MySQLSessionStore,
    PostgresSessionStore,
    RedisSessionStore,
    SQLiteSessionStore,
    StoreError,
)
from sessionware.stores._connections import store_error
from tests.conftest import FACTORIES
from tests.docs_examples import example, run
from tests.factories import memcached as memcached_factory
from tests.factories import mysql as mysql_factory
from tests.factories import postgres as postgres_factory
from tests.factories import redis as redis_factory
from tests.factories import redis_cluster
from tests.services import free_port, require

TTL = timedelta(minutes=5)
PG_DSN = postgres_factory.DSN
MYSQL_DSN = mysql_factory.DSN
REDIS_URL = redis_factory.URL


def new_id() -> str:
    """An id shaped like the repository's (SHA-256 hex of a key)."""
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()


def table_name() -> str:
    return f"sessionware_test_{uuid.uuid4().hex[:24]}"


# --- stores made outside any event loop -----------------------------------------------------


@dataclass
class Made:
    """A store made outside any loop, and what removes its data afterwards (in a loop)."""

    store: Any
    cleanup: Callable[[], Awaitable[None]]

    def close(self) -> None:
        if hasattr(self.store, "aclose"):
            asyncio.run(self.store.aclose())
        asyncio.run(self.cleanup())


async def _nothing() -> None:
    pass


def _redis(tmp_path: Path, **options: Any) -> Made:
    require("Redis", "127.0.0.1", 6379)
    prefix = redis_factory.unique_prefix()
    store = RedisSessionStore.from_url(REDIS_URL, key_prefix=prefix, **options)
    return Made(store, lambda: redis_factory.delete_prefixed(REDIS_URL, prefix))


def _redis_cluster(tmp_path: Path) -> Made:
    urls = redis_cluster.node_urls()
    prefix = redis_factory.unique_prefix()
    store = RedisSessionStore.from_url(urls[0], key_prefix=prefix, cluster=True)

    async def cleanup() -> None:
        for url in urls:
            await redis_factory.delete_prefixed(url, prefix)

    return Made(store, cleanup)


async def _drop_postgres(table: str) -> None:
    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_users")
    finally:
        await conn.close()


def _postgres(tmp_path: Path, **options: Any) -> Made:
    require("PostgreSQL", "127.0.0.1", 5432)
    table = table_name()
    store = PostgresSessionStore.from_dsn(PG_DSN, table=table, **options)
    return Made(store, lambda: _drop_postgres(table))


def _mysql(tmp_path: Path, **options: Any) -> Made:
    require("MariaDB", "127.0.0.1", 3306)
    table = table_name()
    store = MySQLSessionStore.from_dsn(MYSQL_DSN, table=table, **options)
    return Made(store, lambda: mysql_factory.drop_tables(3306, table))


def _memcached(tmp_path: Path) -> Made:
    prefix = f"sessionware-test:{uuid.uuid4().hex}:"
    return Made(
        MemcachedSessionStore.from_url(memcached_factory.shared_url(), key_prefix=prefix), _nothing
    )


def _sqlite(tmp_path: Path) -> Made:
    return Made(SQLiteSessionStore(tmp_path / "sessions.db"), _nothing)


def _cached(tmp_path: Path) -> Made:
    cache, durable = _redis(tmp_path), _postgres(tmp_path)

    async def cleanup() -> None:
        await cache.store.aclose()
        await durable.store.aclose()
        await cache.cleanup()
        await durable.cleanup()

    return Made(CachedSessionStore(cache=cache.store, durable=durable.store), cleanup)


MAKERS: dict[str, Callable[[Path], Made]] = {
    "redis": _redis,
    "redis_cluster": _redis_cluster,
    "postgres": _postgres,
    "mysql": _mysql,
    "memcached": _memcached,
    "sqlite": _sqlite,
    "cached_redis_postgres": _cached,
}


@pytest.fixture(params=sorted(MAKERS))
def made(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Made]:
    made = MAKERS[request.param](tmp_path)
    yield made
    made.close()


async def count(request: Request) -> JSONResponse:
    session = get_session(request)
    session["n"] = session.get("n", 0) + 1
    return JSONResponse(session["n"])


def counter_app(store: Any) -> Starlette:
    app = Starlette(routes=[Route("/", count)])
    app.add_middleware(SessionMiddleware, store=store, key=Key.generate())
    return app


# --- item 9: any event loop -----------------------------------------------------------------


def test_one_store_serves_successive_test_clients(made: Made) -> None:
    """Issue 28 item 9: each ``TestClient`` block runs its own loop; the second block's first
    request used to be an empty 503 (the pool belonged to the first loop)."""
    app = counter_app(made.store)
    with TestClient(app, base_url="https://testserver") as client:
        assert [client.get("/").json() for _ in range(2)] == [1, 2]
        cookie = client.cookies["id"]
    with TestClient(app, base_url="https://testserver") as client:
        client.cookies.set("id", cookie, domain="testserver.local")
        answers = [client.get("/") for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        assert [a.json() for a in answers] == [3, 4]  # the session the first loop stored
    with TestClient(app, base_url="https://testserver") as client:  # a third loop, a new session
        assert client.get("/").json() == 1


def test_two_threads_each_running_a_loop_share_one_store(made: Made) -> None:
    """Two loops use the store at the same time (each thread has its own), then a third reads
    what both wrote."""
    both_opened = threading.Barrier(2, timeout=10)
    written: dict[int, list[str]] = {0: [], 1: []}
    failures: list[BaseException] = []

    async def work(n: int) -> None:
        assert await made.store.get(new_id()) is None  # this loop's connections are open
        await asyncio.get_running_loop().run_in_executor(None, both_opened.wait)
        for i in range(15):
            id, data = new_id(), b'{"v":1,"state":{"t":"%d-%d"}}' % (n, i)
            version = await made.store.put(id, data, TTL, expect=ABSENT)
            assert version is not None
            record = await made.store.get(id)
            assert record is not None and record.data == data
            written[n].append(id)

    def thread(n: int) -> None:
        try:
            asyncio.run(asyncio.wait_for(work(n), 20))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures, failures

    async def read_back() -> None:
        for ids in written.values():
            for id in ids:
                assert await made.store.get(id) is not None

    asyncio.run(read_back())
    assert all(len(ids) == 15 for ids in written.values())


def _connections_named(name: str) -> int:
    """How many connections PostgreSQL and Redis hold for ``application_name``/client ``name``."""

    async def count() -> int:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
            postgres = int(await conn.fetchval(sql, name))
        finally:
            await conn.close()
        client = Redis.from_url(REDIS_URL)
        try:
            clients = await client.client_list()
        finally:
            await client.aclose()
        return postgres + sum(1 for c in clients if c.get("name") == name)

    deadline = time.monotonic() + 10  # a server notices a closed connection a moment later
    while (found := asyncio.run(count())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_a_loops_connections_close_when_it_ends(tmp_path: Path) -> None:
    """The pools a ``TestClient`` block's loop opened are closed when that loop shuts down, so a
    module-level store never holds connections of loops that are gone."""
    name = f"sessionware-test-{uuid.uuid4().hex[:12]}"
    redis = _redis(tmp_path, client_name=name)
    postgres = _postgres(tmp_path, server_settings={"application_name": name})
    try:
        for made in (redis, postgres):
            with TestClient(counter_app(made.store), base_url="https://testserver") as client:
                assert client.get("/").json() == 1
                assert client.get("/").json() == 2
        assert _connections_named(name) == 0
    finally:
        redis.close()
        postgres.close()


Opened = tuple[Any, Callable[[], Awaitable[None]]]
"""A store over a client or pool the test made, and what drops its data and closes them."""


async def _open_redis() -> Opened:
    client = Redis.from_url(REDIS_URL)
    store = RedisSessionStore(client, key_prefix=redis_factory.unique_prefix())

    async def close() -> None:
        await redis_factory.delete_prefixed(REDIS_URL, store.key_prefix)
        await client.aclose()

    return store, close


async def _open_postgres() -> Opened:
    pool = await asyncpg.create_pool(PG_DSN, min_size=1)
    store = PostgresSessionStore(pool, table=table_name())

    async def close() -> None:
        await pool.execute(f"DROP TABLE IF EXISTS {store.table}, {store.table}_users")
        await pool.close()

    return store, close


async def _open_mysql() -> Opened:
    pool = await asyncmy.create_pool(host="127.0.0.1", user="root", db="test", autocommit=True)
    store = MySQLSessionStore(pool, table=table_name())

    async def close() -> None:
        await mysql_factory.drop_tables(3306, store.table)
        pool.close()
        await pool.wait_closed()

    return store, close


async def _open_memcached() -> Opened:
    host, port = memcached_factory.shared_url().removeprefix("memcached://").split(":")
    client = await emcache.create_client([emcache.MemcachedHostAddress(host, int(port))])
    store = MemcachedSessionStore(client, key_prefix=f"sessionware-test:{uuid.uuid4().hex}:")
    return store, client.close


@pytest.mark.parametrize(
    ("server", "open_store"),
    [
        (("Redis", 6379), _open_redis),
        (("PostgreSQL", 5432), _open_postgres),
        (("MariaDB", 3306), _open_mysql),
        (None, _open_memcached),
    ],
    ids=["redis", "postgres", "mysql", "memcached"],
)
def test_a_client_passed_in_used_from_another_loop_says_so(
    server: tuple[str, int] | None, open_store: Callable[[], Awaitable[Opened]]
) -> None:
    """A client or pool the caller made stays the caller's, bound to its loop: from another
    loop every call is a StoreError naming that cause, never a bare driver error."""
    if server is not None:
        require(server[0], "127.0.0.1", server[1])
    home = asyncio.new_event_loop()
    try:
        store, close = home.run_until_complete(open_store())
        id = new_id()
        assert home.run_until_complete(store.put(id, b"{}", TTL, expect=ABSENT)) is not None

        async def elsewhere() -> None:
            with pytest.raises(StoreError, match="another event loop") as caught:
                await store.get(id)
            assert id not in str(caught.value)

        asyncio.run(elsewhere())
        assert home.run_until_complete(store.get(id)) is not None  # still fine at home
        home.run_until_complete(store.aclose())  # leaves the client open: the test's
        home.run_until_complete(close())
    finally:
        home.close()


def test_the_docs_testing_with_redis_example_passes(tmp_path: Path) -> None:
    """docs/testing.md's example: a module-level store, two tests, a TestClient block each."""
    require("Redis", "127.0.0.1", 6379)
    code = run(example("docs/testing.md", "Testing with Redis"), tmp_path)
    store = code["store"]
    try:
        code["test_counts"]()
        code["test_a_new_client_starts_a_new_session"]()
        code["test_counts"]()
    finally:
        asyncio.run(store.aclose())
        asyncio.run(redis_factory.delete_prefixed(REDIS_URL, store.key_prefix))


# --- item 6: statement timeouts ---------------------------------------------------------------


@pytest.mark.parametrize("given_pool", [False, True], ids=["from_dsn", "pool_passed_in"])
async def test_postgres_write_to_a_held_row_times_out(given_pool: bool) -> None:
    """Issue 28 item 6: a write waiting on a row another transaction holds gave up never."""
    require("PostgreSQL", "127.0.0.1", 5432)
    table, pool = table_name(), None
    if given_pool:
        pool = await asyncpg.create_pool(PG_DSN, min_size=1, max_size=2)
        store = PostgresSessionStore(pool, table=table, command_timeout=0.3)
    else:
        store = PostgresSessionStore.from_dsn(PG_DSN, table=table, command_timeout=0.3)
    holder = await asyncpg.connect(PG_DSN)
    try:
        id = new_id()
        version = await store.put(id, b"{}", TTL, expect=ABSENT)
        async with holder.transaction():
            await holder.execute(f"SELECT 1 FROM {table} WHERE key = $1 FOR UPDATE", id)
            with pytest.raises(StoreError, match="failed to put: TimeoutError") as caught:
                await asyncio.wait_for(store.put(id, b"[]", TTL, expect=version), 30)
            assert id not in str(caught.value)
            with pytest.raises(StoreError, match="failed to delete: TimeoutError"):
                await asyncio.wait_for(store.delete(id), 30)
        assert await store.put(id, b"[1]", TTL, expect=version) is not None  # usable again
    finally:
        await holder.close()
        await store.aclose()
        if pool is not None:
            await pool.close()
        await _drop_postgres(table)


@pytest.mark.parametrize("given_pool", [False, True], ids=["from_dsn", "pool_passed_in"])
async def test_mysql_write_to_a_held_row_times_out(given_pool: bool) -> None:
    """Issue 28 item 6: such a write waited for MariaDB's lock wait timeout (50 s)."""
    require("MariaDB", "127.0.0.1", 3306)
    table, pool = table_name(), None
    if given_pool:
        pool = await asyncmy.create_pool(host="127.0.0.1", user="root", db="test", autocommit=True)
        store = MySQLSessionStore(pool, table=table, command_timeout=0.3)
    else:
        store = MySQLSessionStore.from_dsn(MYSQL_DSN, table=table, command_timeout=0.3)
    holder = await asyncmy.connect(host="127.0.0.1", user="root", db="test")
    try:
        id = new_id()
        version = await store.put(id, b"{}", TTL, expect=ABSENT)
        async with holder.cursor() as cursor:
            await cursor.execute("BEGIN")
            await cursor.execute(f"SELECT 1 FROM {table} WHERE `key` = %s FOR UPDATE", (id,))
            with pytest.raises(StoreError, match="failed to put: ") as caught:
                await asyncio.wait_for(store.put(id, b"[]", TTL, expect=version), 30)
            assert id not in str(caught.value)
            await cursor.execute("ROLLBACK")
        assert await store.put(id, b"[1]", TTL, expect=version) is not None  # usable again
    finally:
        holder.close()
        await store.aclose()
        if pool is not None:
            pool.close()
            await pool.wait_closed()
        await mysql_factory.drop_tables(3306, table)


async def test_sqlite_write_while_another_connection_holds_the_lock_times_out(
    tmp_path: Path,
) -> None:
    store = SQLiteSessionStore(tmp_path / "s.db", busy_timeout=0.2)
    holder = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        id = new_id()
        version = await store.put(id, b"{}", TTL, expect=ABSENT)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="failed to put: OperationalError: database is locked"):
            await asyncio.wait_for(store.put(id, b"[]", TTL, expect=version), 30)
        holder.execute("ROLLBACK")
        assert await store.put(id, b"[1]", TTL, expect=version) is not None
    finally:
        holder.close()
        await store.aclose()


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, "5", True, None])
def test_timeouts_must_be_positive_seconds(value: Any, tmp_path: Path) -> None:
    makers: list[Callable[[], object]] = [
        lambda: PostgresSessionStore(None, command_timeout=value),
        lambda: PostgresSessionStore.from_dsn(PG_DSN, command_timeout=value),
        lambda: MySQLSessionStore(None, command_timeout=value),
        lambda: MySQLSessionStore.from_dsn(MYSQL_DSN, command_timeout=value),
        lambda: SQLiteSessionStore(tmp_path / "s.db", busy_timeout=value),
    ]
    for make in makers:
        with pytest.raises(ValueError, match="must be a positive number of seconds"):
            make()


def test_the_default_timeouts() -> None:
    assert PostgresSessionStore.from_dsn(PG_DSN).command_timeout == 5.0
    assert MySQLSessionStore.from_dsn(MYSQL_DSN).command_timeout == 5.0


# --- item 15: check() -------------------------------------------------------------------------


@pytest.mark.parametrize("factory", sorted(FACTORIES))
async def test_check_passes_on_a_store_that_answers(factory: str) -> None:
    async with FACTORIES[factory].store() as store:
        await store.check()
        await store.check()


def _closed_port_stores(port: int) -> dict[str, Any]:
    secret = "s3cret-pw"
    return {
        "redis": RedisSessionStore.from_url(
            f"redis://:{secret}@127.0.0.1:{port}/0", socket_connect_timeout=1
        ),
        "postgres": PostgresSessionStore.from_dsn(
            f"postgresql://postgres:{secret}@127.0.0.1:{port}/test", connect_timeout=1
        ),
        "mysql": MySQLSessionStore.from_dsn(
            f"mysql://root:{secret}@127.0.0.1:{port}/test", connect_timeout=1
        ),
        "memcached": MemcachedSessionStore.from_url(f"memcached://127.0.0.1:{port}", timeout=0.3),
    }


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql", "memcached"])
async def test_check_names_the_host_and_cause_never_the_password(kind: str) -> None:
    port = free_port()
    store = _closed_port_stores(port)[kind]
    try:
        with pytest.raises(StoreError) as caught:
            await store.check()
        message = str(caught.value)
        assert f"127.0.0.1:{port}" in message
        assert "s3cret" not in message
        cause = caught.value.__cause__
        assert cause is not None and type(cause).__name__ in message
        assert any(word in message.lower() for word in ("refused", "no answer", "timeout"))
    finally:
        await store.aclose()


async def test_sqlite_check_names_the_file_and_cause(tmp_path: Path) -> None:
    path = tmp_path / "missing-directory" / "s.db"
    store = SQLiteSessionStore(path)
    try:
        with pytest.raises(StoreError, match="unable to open database file") as caught:
            await store.check()
        assert str(path) in str(caught.value)
    finally:
        await store.aclose()


@pytest.mark.parametrize("wrapper", ["cached", "migrating"])
async def test_a_store_over_two_checks_both_and_names_which_failed(
    wrapper: str, tmp_path: Path
) -> None:
    port = free_port()
    down = RedisSessionStore.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    up = SQLiteSessionStore(tmp_path / "s.db")
    try:
        if wrapper == "cached":
            broken: Any = CachedSessionStore(cache=down, durable=up)
            working: Any = CachedSessionStore(cache=MemorySessionStore(), durable=up)
            failed = "the cached store's cache failed its check"
        else:
            broken = MigratingStore(old=up, new=down)
            working = MigratingStore(old=MemorySessionStore(), new=up)
            failed = "the migrating store's new store failed its check"
        with pytest.raises(StoreError, match=f"^{failed}: Redis PING failed: .*127.0.0.1:{port}"):
            await broken.check()
        await working.check()
    finally:
        await down.aclose()
        await up.aclose()


# --- the messages ---------------------------------------------------------------------------


def test_a_driver_message_loses_what_could_be_a_key_an_id_or_data() -> None:
    key = "K" * 64
    cases = [
        Exception(f"Duplicate entry '{key}' for key 'PRIMARY'"),
        Exception(f'invalid input syntax for type bigint: "{{\\"user\\": 1}}" near {key}'),
        RuntimeError(f"Task <Task pending name='{key}'> got Future attached to a different loop"),
    ]
    for exc in cases:
        message = str(store_error("X store failed to put", exc, "db.example:5432/app"))
        assert key not in message and "user" not in message, message
        assert message.startswith(f"X store failed to put: {type(exc).__name__}: ")
        assert message.endswith("(at db.example:5432/app)")
    refused = ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432)")
    assert "('10.0.0.7', 5432)" in str(store_error("X", refused, "h"))  # OS errors stay whole
    assert "no answer within 0.5 s" in str(
        store_error("X", asyncio.TimeoutError(), "h", timeout=0.5)
    )
