"""RedisSessionStore against real servers: the one at 127.0.0.1:6379, and throwaway ones of the
tests' own (on free loopback ports) for outages, slowness, dropped connections and Sentinel."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ResponseError

from sessionware.state import StoredState, encode_tombstone, read_tombstone
from sessionware.stores import Changes, LoadError, SaveError, UpdateError, generate_session_key
from sessionware.stores.base import SessionKey
from sessionware.stores.redis import RedisSessionStore
from tests.factories.redis import URL, Server, delete_prefixed, start_server, unique_prefix
from tests.services import free_port, require

TTL = timedelta(minutes=5)
TIMEOUT = 0.5
"""socket and connect timeouts of the stores on the tests' own servers."""


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    """A plain client on the shared server, to read and plant records behind the store's back."""
    require("Redis", "127.0.0.1", 6379)
    client = Redis.from_url(URL)
    yield client
    await client.aclose()


@pytest.fixture
async def store(raw: Redis) -> AsyncIterator[RedisSessionStore]:
    """A store on the shared server whose client is ``raw``'s twin, under a prefix of its own."""
    session_store = RedisSessionStore.from_url(URL, key_prefix=unique_prefix())
    yield session_store
    await session_store.aclose()
    await delete_prefixed(URL, session_store._prefix)


@pytest.fixture
async def own_client(raw: Redis) -> AsyncIterator[Redis]:
    """A client the test may wrap (``get``), shared with the store it builds from it."""
    client = Redis.from_url(URL)
    yield client
    await client.aclose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A redis-server of this test's own, killed afterwards."""
    own = start_server(str(tmp_path), "--enable-debug-command", "yes")
    yield own
    own.stop()


def name(store: RedisSessionStore, key: str) -> str:
    return store._prefix + key


def own_store(server: Server) -> RedisSessionStore:
    return RedisSessionStore.from_url(
        server.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
    )


# --- format and commands ------------------------------------------------------------------------


async def test_missing_key_loads_none(store: RedisSessionStore) -> None:
    assert await store.load(generate_session_key()) is None


@pytest.mark.parametrize("garbage", [b"random-thing-which-is-not-json", b"\xff\xfe{}", b"[]"])
async def test_unreadable_value_is_a_deserialization_error(
    store: RedisSessionStore, raw: Redis, garbage: bytes
) -> None:
    key = generate_session_key()
    await raw.set(name(store, key), garbage)
    with pytest.raises(LoadError) as info:
        await store.load(key)
    assert info.value.deserialization


async def test_actix_legacy_value_loads(store: RedisSessionStore, raw: Redis) -> None:
    key = generate_session_key()
    await raw.set(name(store, key), '{"counter":"100","user_id":"\\"ferris\\""}')
    assert await store.load(key) == {"counter": 100, "user_id": "ferris"}


async def test_stored_value_is_the_v1_envelope(store: RedisSessionStore, raw: Redis) -> None:
    key = await store.save({"k": "value", "n": 1}, TTL)
    stored = await raw.get(name(store, key))
    assert stored is not None and stored.startswith(b'{"v":1,"state":')
    assert json.loads(stored)["state"] == {"k": "value", "n": 1}
    await store.update(key, {"k": "value", "n": 2}, TTL, Changes(set={"n": 2}))
    assert json.loads(await raw.get(name(store, key)))["state"] == {"k": "value", "n": 2}


async def test_records_carry_the_ttl(store: RedisSessionStore, raw: Redis) -> None:
    async def pttl(key: str) -> int:
        return int(await raw.pttl(name(store, key)))

    key = await store.save({"a": 1}, TTL)
    assert 299_000 < await pttl(key) <= 300_000
    await store.update(key, {"a": 2}, timedelta(minutes=10))
    assert 599_000 < await pttl(key) <= 600_000
    await store.update_ttl(key, timedelta(minutes=15))
    assert 899_000 < await pttl(key) <= 900_000
    short = await store.save({"a": 1}, timedelta(milliseconds=200))  # never EX 0
    assert 0 < await pttl(short) <= 1_000
    await store.delete(key)
    assert 299_000 < await pttl(key) <= 300_000  # the tombstone's


async def test_update_of_a_never_saved_key_gives_a_new_key(store: RedisSessionStore) -> None:
    fresh = generate_session_key()
    new = await store.update(fresh, {}, timedelta(seconds=1))
    assert new is not None and new != fresh


async def test_key_collision_on_save_is_retried(
    store: RedisSessionStore, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken, free = generate_session_key(), generate_session_key()
    await raw.set(name(store, taken), "someone else's")
    keys = iter([taken, free])
    monkeypatch.setattr("sessionware.stores.redis.generate_session_key", lambda: next(keys))
    assert await store.save({"a": 1}, TTL) == free
    assert await raw.get(name(store, taken)) == b"someone else's"
    assert await store.load(free) == {"a": 1}


async def test_save_gives_up_when_every_key_is_taken(
    store: RedisSessionStore, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = generate_session_key()
    await raw.set(name(store, taken), "x")
    monkeypatch.setattr("sessionware.stores.redis.generate_session_key", lambda: taken)
    with pytest.raises(SaveError) as info:
        await store.save({"a": 1}, TTL)
    assert not info.value.serialization


async def test_state_that_is_not_json_is_a_serialization_error(store: RedisSessionStore) -> None:
    with pytest.raises(SaveError) as saving:
        await store.save({"x": object()}, TTL)
    assert saving.value.serialization
    key = await store.save({"a": 1}, TTL)
    with pytest.raises(UpdateError) as updating:
        await store.update(key, {"x": float("nan")}, TTL)
    assert updating.value.serialization


async def test_key_evicted_before_update_is_saved_whole_under_a_new_key(
    store: RedisSessionStore, raw: Redis
) -> None:
    key = await store.save({"a": 1}, TTL)
    assert await store.load(key) == {"a": 1}
    await raw.delete(name(store, key))
    new = await store.update(key, {"a": 1, "b": 2}, TTL, Changes(set={"b": 2}))
    assert new is not None and new != key
    assert await store.load(new) == {"a": 1, "b": 2}
    assert await store.load(key) is None


async def test_wrong_type_is_a_store_error_not_bad_data(
    store: RedisSessionStore, raw: Redis
) -> None:
    key = generate_session_key()
    await raw.lpush(name(store, key), "x")
    with pytest.raises(LoadError) as info:
        await store.load(key)
    assert not info.value.deserialization
    assert isinstance(info.value.__cause__, ResponseError)
    with pytest.raises(UpdateError) as update:
        await store.update(key, {"a": 1}, TTL)
    assert not update.value.serialization


async def test_client_that_decodes_responses(store: RedisSessionStore, raw: Redis) -> None:
    client = Redis.from_url(URL, decode_responses=True)
    decoding = RedisSessionStore(client, key_prefix=store._prefix)
    try:
        key = await decoding.save({"é": [1, {}]}, TTL)
        assert await decoding.update(key, {}, TTL, Changes(set={"b": 1.5})) == key
        assert await decoding.load(key) == {"é": [1, {}], "b": 1.5}
        bad = generate_session_key()
        await raw.set(name(store, bad), b"\xff\xfe")
        with pytest.raises(LoadError) as info:
            await decoding.load(bad)
        assert info.value.deserialization
        assert await decoding.load(key) == {"é": [1, {}], "b": 1.5}
    finally:
        await decoding.aclose()  # not the store's client: stays open
        assert await client.ping()
        await client.aclose()


def test_bad_url_fails_at_construction() -> None:
    for url in ["not a url", "http://127.0.0.1:6379", "redis://127.0.0.1:notaport"]:
        with pytest.raises(ValueError):
            RedisSessionStore.from_url(url)


# --- concurrency, purge and renew -----------------------------------------------------------------


def gate_gets(
    client: Redis, after_first: Callable[[], Awaitable[None]] | None = None, hold: int = 1
) -> list[str]:
    """Wrap ``client.get``: the first ``hold`` GETs return only once all of them have been
    answered (and ``after_first`` has run). Returns the list of GET'd names."""
    original = client.get
    calls: list[str] = []
    released = asyncio.Event()

    async def get(key: str) -> Any:
        value = await original(key)
        calls.append(key)
        if len(calls) == hold:
            if after_first is not None:
                await after_first()
            released.set()
        if len(calls) <= hold:
            await released.wait()
        return value

    client.get = get  # type: ignore[method-assign]
    return calls


async def test_concurrent_updates_keep_both_changes(store: RedisSessionStore) -> None:
    key = await store.save({"a": 0, "b": 0}, TTL)
    for i in range(1, 6):
        await asyncio.gather(
            store.update(key, {"a": i, "b": 0}, TTL, Changes(set={"a": i})),
            store.update(key, {"a": 0, "b": i}, TTL, Changes(set={"b": i})),
        )
        assert await store.load(key) == {"a": i, "b": i}


async def test_interleaved_updates_keep_both_changes(
    store: RedisSessionStore, own_client: Redis
) -> None:
    key = await store.save({"a": 0, "b": 0, "c": 0}, TTL)
    racing = RedisSessionStore(own_client, key_prefix=store._prefix)
    calls = gate_gets(own_client, hold=2)  # both GETs before either compare-and-set
    assert await asyncio.gather(
        racing.update(key, {"a": 1, "b": 0, "c": 0}, TTL, Changes(set={"a": 1})),
        racing.update(key, {"a": 0, "b": 0}, TTL, Changes(set={"b": 2}, removed=frozenset("c"))),
    ) == [key, key]
    assert len(calls) == 3  # the loser read again and merged on top of the winner
    assert await store.load(key) == {"a": 1, "b": 2}


async def test_purge_beats_a_late_update(store: RedisSessionStore, raw: Redis) -> None:
    key = await store.save({"a": 1}, TTL)
    assert await store.load(key) == {"a": 1}
    await store.delete(key)
    assert await store.update(key, {"a": 2}, TTL, Changes(set={"a": 2})) is None
    assert await store.update(key, {"a": 2}, TTL) is None
    assert read_tombstone(await raw.get(name(store, key))) == (True, None)
    assert await store.load(key) is None


async def test_purge_between_read_and_write_wins(
    store: RedisSessionStore, raw: Redis, own_client: Redis
) -> None:
    key = await store.save({"a": 1}, TTL)
    racing = RedisSessionStore(own_client, key_prefix=store._prefix)
    calls = gate_gets(own_client, after_first=lambda: store.delete(key))
    assert await racing.update(key, {"a": 2}, TTL, Changes(set={"a": 2})) is None
    assert len(calls) == 2
    assert read_tombstone(await raw.get(name(store, key))) == (True, None)


async def test_renew_between_read_and_write_moves_the_change(
    store: RedisSessionStore, own_client: Redis
) -> None:
    old = await store.save({"a": 1, "user": None}, TTL)
    new = await store.save({"a": 1, "user": "ferris"}, TTL)
    racing = RedisSessionStore(own_client, key_prefix=store._prefix)
    gate_gets(own_client, after_first=lambda: store.delete(old, successor=new))
    assert await racing.update(old, {"a": 2, "user": None}, TTL, Changes(set={"a": 2})) == new
    assert await store.load(new) == {"a": 2, "user": "ferris"}


async def test_tombstone_chain_and_odd_successor(store: RedisSessionStore, raw: Redis) -> None:
    first, second, third = [await store.save({"n": i}, TTL) for i in range(3)]
    await store.delete(first, successor=second)
    await store.delete(second, successor=third)
    assert await store.update(first, {}, TTL, Changes(set={"x": 1})) == third
    assert await store.load(third) == {"n": 2, "x": 1}
    looped = generate_session_key()
    await raw.set(name(store, looped), '{"v":0,"state":{},"successor":"../etc"}')
    assert await store.update(looped, {}, TTL, Changes(set={"x": 1})) is None


async def test_purge_follows_renewals_and_unfiles_the_live_session(
    store: RedisSessionStore, raw: Redis
) -> None:
    first, second = [await store.save({"n": i}, TTL) for i in range(2)]
    third = await store.save(StoredState({"n": 2}, user="ferris"), TTL)
    await store.delete(first, successor=second)
    await store.delete(second, successor=third)
    await store.delete(first, successor=generate_session_key())  # the first renewal stays
    assert read_tombstone(await raw.get(name(store, first))) == (True, second)
    await store.delete(first)
    assert read_tombstone(await raw.get(name(store, first))) == (True, second)
    assert read_tombstone(await raw.get(name(store, second))) == (True, third)
    assert read_tombstone(await raw.get(name(store, third))) == (True, None)
    assert await raw.zcard(name(store, "user:ferris")) == 0


async def test_purge_stops_at_odd_successors_and_loops(
    store: RedisSessionStore, raw: Redis
) -> None:
    live = await store.save(StoredState({"n": 1}, user="ferris"), TTL)
    odd, a, b = (generate_session_key() for _ in range(3))
    await raw.set(name(store, odd), '{"v":0,"state":{},"successor":"user:ferris"}')
    await raw.set(name(store, a), encode_tombstone(b))
    await raw.set(name(store, b), encode_tombstone(a))
    await store.delete(odd)  # never buries the user's set
    await store.delete(a)  # a cycle ends after a bounded number of hops
    assert [info.key for info in await store.sessions_for("ferris")] == [live]
    assert read_tombstone(await raw.get(name(store, a))) == (True, b)


# --- outages, slowness, dropped connections (own servers) -------------------------------------------


async def test_server_down_is_a_store_error_within_the_timeout(server: Server) -> None:
    session_store = own_store(server)
    try:
        key = await session_store.save({"a": 1}, TTL)
        server.stop()
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: session_store.load(key),
            lambda: session_store.save({"a": 1}, TTL),
            lambda: session_store.update(key, {"a": 2}, TTL),
            lambda: session_store.update_ttl(key, TTL),
            lambda: session_store.delete(key),
        ]
        errors = [LoadError, SaveError, UpdateError, UpdateError, UpdateError]
        for call, error in zip(calls, errors, strict=True):
            started = time.monotonic()
            with pytest.raises(error) as info:
                await call()
            assert time.monotonic() - started < TIMEOUT + 1
            assert not getattr(info.value, "deserialization", False)
            assert not getattr(info.value, "serialization", False)
    finally:
        await session_store.aclose()


async def test_server_that_never_answers_times_out() -> None:
    """A port that accepts TCP connections (kernel backlog) but never speaks Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen(8)
        port = listener.getsockname()[1]
        session_store = RedisSessionStore.from_url(
            f"redis://127.0.0.1:{port}", socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )
        started = time.monotonic()
        with pytest.raises(LoadError):
            await session_store.load(generate_session_key())
        assert time.monotonic() - started < TIMEOUT + 1
        await session_store.aclose()


async def test_slow_server_is_a_store_error_within_the_timeout(server: Server) -> None:
    session_store = own_store(server)
    admin = Redis.from_url(server.url)
    try:
        key = await session_store.save({"a": 1}, TTL)
        sleeping = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "1.5"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(LoadError) as info:
            await session_store.load(key)
        assert time.monotonic() - started < TIMEOUT + 1
        assert not info.value.deserialization
        await sleeping
        assert await session_store.load(key) == {"a": 1}  # the timed-out connection was dropped
    finally:
        await session_store.aclose()
        await admin.aclose()


async def test_dropped_connection_is_retried_once(server: Server) -> None:
    session_store = own_store(server)
    admin = Redis.from_url(server.url)
    try:
        key = await session_store.save({"a": 1}, TTL)
        for _ in range(2):
            killed = await admin.execute_command(
                "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )
            assert killed >= 1
            assert await session_store.load(key) == {"a": 1}
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert await session_store.update(key, {"a": 2}, TTL, Changes(set={"a": 2})) == key
    finally:
        await session_store.aclose()
        await admin.aclose()


async def test_sentinel_master(server: Server, tmp_path: Path) -> None:
    config = tmp_path / "sentinel.conf"
    config.write_text(f"sentinel monitor main 127.0.0.1 {server.port} 1\n")
    sentinel_server = start_server(str(tmp_path), "--sentinel", config_file=str(config))
    sentinel = Sentinel([("127.0.0.1", sentinel_server.port)], socket_timeout=TIMEOUT)
    client = sentinel.master_for("main", socket_timeout=TIMEOUT)
    try:
        session_store = RedisSessionStore(client, key_prefix=unique_prefix())
        key = await session_store.save({"a": 1}, TTL)
        assert await session_store.update(key, {}, TTL, Changes(set={"b": 2})) == key
        assert await session_store.load(key) == {"a": 1, "b": 2}
        assert await session_store.load(SessionKey("x")) is None
    finally:
        await client.aclose()
        for node in sentinel.sentinels:
            await node.aclose()
        sentinel_server.stop()
