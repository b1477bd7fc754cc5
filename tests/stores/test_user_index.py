"""The user index (``UserIndexedStore``): every server-side store lists and ends a user's sessions.

Sessions are bound by saving a ``StoredState`` whose ``user`` is set, as the middleware does after
``Session.bind_user``. Then a few store-specific checks: the Redis set tolerating stale members,
the SQL tables of the previous schema gaining ``user_id``, memory eviction, the cookie store.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis

from sessionware.state import StoredState, encode_state
from sessionware.stores import (
    Changes,
    CookieSessionStore,
    MemorySessionStore,
    NotSupportedError,
    SessionKey,
    SessionStore,
    UserIndexedStore,
    generate_session_key,
)
from sessionware.stores.postgres import PostgresSessionStore
from sessionware.stores.redis import RedisSessionStore
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.factories import postgres as postgres_factory
from tests.factories import redis as redis_factory
from tests.services import require

TTL = timedelta(minutes=5)
T0 = 1_700_000_000.0


def bound(
    user: str | None, *, agent: str | None = "UA", created: float = T0, **state: Any
) -> StoredState:
    """A state as the middleware writes it for a session bound to ``user``."""
    return StoredState(state, created=created, seen=created + 5, user=user, agent=agent)


def indexed(store: SessionStore) -> UserIndexedStore:
    assert isinstance(store, UserIndexedStore)
    return store


async def keys_of(store: UserIndexedStore, user: str) -> list[str]:
    return [info.key for info in await store.sessions_for(user)]


# --- every server-side store ----------------------------------------------------------------------


async def test_a_bound_session_is_listed_with_its_metadata(server_store: SessionStore) -> None:
    store = indexed(server_store)
    key = await store.save(bound("u1", agent="Mozilla/5.0 Test", a=1), TTL)
    await store.save({"a": 1}, TTL)  # not bound
    await store.save(bound("u2"), TTL)
    before = time.time()
    [info] = await store.sessions_for("u1")
    assert info.key == key
    assert info.created == T0 and info.last_seen == T0 + 5
    assert info.user_agent == "Mozilla/5.0 Test"
    assert info.expires is not None and before + 280 < info.expires < before + 310
    assert await store.sessions_for("nobody") == []


async def test_sessions_are_listed_oldest_first(server_store: SessionStore) -> None:
    store = indexed(server_store)
    middle = await store.save(bound("u1", created=T0 + 10), TTL)
    newest = await store.save(bound("u1", created=T0 + 20), TTL)
    oldest = await store.save(bound("u1", created=T0), TTL)
    assert await keys_of(store, "u1") == [oldest, middle, newest]


async def test_update_keeps_the_session_and_refreshes_last_seen(server_store: SessionStore) -> None:
    store = indexed(server_store)
    key = await store.save(bound("u1", a=1), TTL)
    later = StoredState({"a": 2}, created=T0 + 99, seen=T0 + 60, user="u1", agent="UA")
    assert await store.update(key, later, TTL, Changes(set={"a": 2})) == key
    [info] = await store.sessions_for("u1")
    assert info.key == key and info.created == T0 and info.last_seen == T0 + 60
    # A plain mapping keeps the record's metadata, the user among it.
    assert await store.update(key, {"a": 3}, TTL) == key
    assert await keys_of(store, "u1") == [key]


async def test_a_new_user_moves_the_session(server_store: SessionStore) -> None:
    store = indexed(server_store)
    key = await store.save(bound("u1"), TTL)
    assert await store.update(key, bound("u2"), TTL, Changes()) == key
    assert await keys_of(store, "u1") == []
    assert await keys_of(store, "u2") == [key]
    loaded = await store.load(key)
    assert loaded is not None and loaded.user == "u2"


async def test_unbinding_removes_the_session(server_store: SessionStore) -> None:
    store = indexed(server_store)
    key = await store.save(bound("u1"), TTL)
    assert await store.update(key, bound(None, agent=None), TTL, Changes()) == key
    assert await keys_of(store, "u1") == []
    assert await store.load(key) == {}


async def test_update_ttl_keeps_the_session_listed(server_store: SessionStore) -> None:
    store = indexed(server_store)
    key = await store.save(bound("u1"), TTL)
    await store.update_ttl(key, timedelta(minutes=15))
    [info] = await store.sessions_for("u1")
    assert info.key == key
    assert info.expires is not None and info.expires > time.time() + 880


async def test_delete_removes_the_session(server_store: SessionStore) -> None:
    store = indexed(server_store)
    key = await store.save(bound("u1"), TTL)
    other = await store.save(bound("u1", created=T0 + 1), TTL)
    await store.delete(key)
    assert await keys_of(store, "u1") == [other]


async def test_renewal_lists_only_the_new_key(server_store: SessionStore) -> None:
    store = indexed(server_store)
    old = await store.save(bound("u1", a=1), TTL)
    new = await store.save(bound("u1", a=1), TTL)
    await store.delete(old, successor=new)
    assert await keys_of(store, "u1") == [new]
    # A slower request on the old key lands on the new one, which stays listed once.
    assert await store.update(old, bound("u1", a=2), TTL, Changes(set={"a": 2})) == new
    assert await keys_of(store, "u1") == [new]


async def test_delete_all_for_ends_every_session_of_the_user(server_store: SessionStore) -> None:
    store = indexed(server_store)
    mine = [await store.save(bound("u1", created=T0 + i, n=i), TTL) for i in range(3)]
    theirs = await store.save(bound("u2"), TTL)
    unbound = await store.save({"n": 9}, TTL)
    assert await store.delete_all_for("u1") == 3
    assert await store.sessions_for("u1") == []
    for key in mine:
        assert await store.load(key) is None
        # Tombstoned: a request that loaded before the sign-out cannot bring it back.
        assert await store.update(key, bound("u1", n=7), TTL, Changes(set={"n": 7})) is None
        assert await store.load(key) is None
    assert await keys_of(store, "u2") == [theirs]
    assert await store.load(unbound) == {"n": 9}
    assert await store.delete_all_for("u1") == 0
    assert await store.delete_all_for("nobody") == 0


async def test_delete_all_for_can_spare_the_current_session(server_store: SessionStore) -> None:
    store = indexed(server_store)
    here, *elsewhere = [await store.save(bound("u1", created=T0 + i, n=i), TTL) for i in range(3)]
    assert await store.delete_all_for("u1", except_key=here) == 2
    assert await keys_of(store, "u1") == [here]
    assert await store.load(here) == {"n": 0}
    assert await store.update(here, bound("u1", n=5), TTL, Changes(set={"n": 5})) == here
    for key in elsewhere:
        assert await store.load(key) is None
        assert await store.update(key, bound("u1", n=7), TTL, Changes(set={"n": 7})) is None
    # A key that is not the user's changes nothing.
    assert await store.delete_all_for("u1", except_key=generate_session_key()) == 1
    assert await store.load(here) is None


async def test_expired_sessions_are_not_listed(server_store: SessionStore) -> None:
    store = indexed(server_store)
    lasting = await store.save(bound("u1", created=T0 + 1), TTL)
    await store.save(bound("u1"), timedelta(seconds=1))
    await asyncio.sleep(1.3)  # past the 1 s TTL; Redis expires to the millisecond
    assert await keys_of(store, "u1") == [lasting]
    assert await store.delete_all_for("u1") == 1


# --- store-specific ------------------------------------------------------------------------------


async def test_cookie_store_says_it_keeps_no_index() -> None:
    store = CookieSessionStore()
    with pytest.raises(NotSupportedError, match="server-side store"):
        await store.sessions_for("u1")
    with pytest.raises(NotSupportedError, match="server-side store"):
        await store.delete_all_for("u1", except_key=SessionKey("x"))


async def test_memory_index_follows_expiry_and_eviction() -> None:
    now = [T0]
    store = MemorySessionStore(max_entries=2, clock=lambda: now[0])
    first = await store.save(bound("u1"), TTL)
    second = await store.save(bound("u1", created=T0 + 1), timedelta(seconds=10))
    [info, _] = await store.sessions_for("u1")
    assert info.expires == T0 + 300
    now[0] += 11
    assert await keys_of(store, "u1") == [first]
    third = await store.save(bound("u2"), TTL)
    await store.save(bound("u2"), TTL)  # evicts the oldest record: first
    assert await keys_of(store, "u1") == []
    assert await store.load(second) is None and await store.load(third) is not None
    assert store._users.keys() == {"u2"} and len(store._owner) == 2


@pytest.fixture
async def redis_store() -> Any:
    async with redis_factory.store() as store:
        client = Redis.from_url(redis_factory.URL)
        yield store, client
        await client.aclose()


async def test_redis_user_set_scores_expiry_and_outlives_its_sessions(
    redis_store: tuple[RedisSessionStore, Redis],
) -> None:
    store, raw = redis_store
    index = f"{store._prefix}user:u1"
    key = await store.save(bound("u1"), TTL)
    score = await raw.zscore(index, key)
    assert score is not None and time.time() + 295 < score < time.time() + 305
    assert 300 <= await raw.ttl(index) <= 302
    await store.update_ttl(key, timedelta(minutes=15))
    assert (await raw.zscore(index, key) or 0) > time.time() + 895
    assert 900 <= await raw.ttl(index) <= 902
    await store.save(bound("u1"), timedelta(minutes=1))  # a shorter session never shortens it
    assert await raw.ttl(index) > 895
    await store.delete_all_for("u1")
    assert await raw.zcard(index) == 0


async def test_redis_list_tolerates_stale_members(
    redis_store: tuple[RedisSessionStore, Redis],
) -> None:
    """What a crash between a record's command and its set's leaves behind."""
    store, raw = redis_store
    index = f"{store._prefix}user:u1"
    live = await store.save(bound("u1"), TTL)
    purged = await store.save(bound("u1"), TTL)
    moved = await store.save(bound("u2"), TTL)
    missing = generate_session_key()
    await raw.set(store._prefix + purged, '{"v":0,"state":{},"successor":null}')  # no ZREM
    expiry = time.time() + 300
    await raw.zadd(index, {purged: expiry, moved: expiry, missing: expiry, "stale": 1.0})
    assert await keys_of(store, "u1") == [live]
    # Tombstoned and long-expired members are dropped; the others may still be on their way in.
    members = await raw.zrange(index, 0, -1)
    assert {m.decode() for m in members if isinstance(m, bytes)} == {live, moved, missing}
    assert await store.delete_all_for("u1") == 1
    assert await keys_of(store, "u2") == [moved]
    assert await store.load(moved) is not None


OLD_SQLITE = "CREATE TABLE sessions (key TEXT PRIMARY KEY, data TEXT, successor TEXT,"
OLD_SQLITE += " expires REAL NOT NULL)"


async def test_sqlite_table_of_the_previous_schema_gains_user_id(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    key = generate_session_key()
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_SQLITE)
        conn.execute(
            "INSERT INTO sessions VALUES (?, ?, NULL, ?)",
            (key, encode_state({"a": 1}), time.time() + 300),
        )
    conn.close()
    store = SQLiteSessionStore(path)
    try:
        assert await store.load(SessionKey(key)) == {"a": 1}
        assert await store.update(SessionKey(key), bound("u1", a=1), TTL, Changes()) == key
        assert await keys_of(store, "u1") == [key]
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sessions)")]
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(sessions)")}
    conn.close()
    assert columns.count("user_id") == 1 and "sessions_user" in indexes
    reopened = SQLiteSessionStore(path)  # the column is there now: nothing to add
    try:
        assert await keys_of(reopened, "u1") == [key]
    finally:
        await reopened.aclose()


async def test_postgres_table_of_the_previous_schema_gains_user_id() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    table = f"sessionware_old_{uuid.uuid4().hex}"
    conn = await asyncpg.connect(postgres_factory.DSN, timeout=5)
    key = generate_session_key()
    try:
        await conn.execute(
            f"CREATE TABLE {table} (key TEXT PRIMARY KEY, data TEXT, successor TEXT,"
            " expires TIMESTAMPTZ NOT NULL)"
        )
        await conn.execute(
            f"INSERT INTO {table} VALUES ($1, $2, NULL, now() + interval '5 minutes')",
            key,
            encode_state({"a": 1}),
        )
        for _ in range(2):  # the second store finds the column already there
            store = PostgresSessionStore.from_dsn(postgres_factory.DSN, table=table)
            try:
                assert await store.load(SessionKey(key)) is not None
                await store.update(SessionKey(key), bound("u1", a=1), TTL, Changes())
                assert await keys_of(store, "u1") == [key]
            finally:
                await store.aclose()
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
        )
        assert [row[0] for row in columns].count("user_id") == 1
        assert await conn.fetchval("SELECT to_regclass($1)", f"{table[:54]}_user") is not None
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
