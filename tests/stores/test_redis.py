"""RedisSessionStore's records and index against real servers: the one at 127.0.0.1:6379, a
Redis Cluster and a Sentinel of the tests' own, and throwaway servers (on free loopback ports)
for outages, slowness and dropped connections. Session semantics over this store are the
repository's contract suite; these are the driver's and the record layer's specifics."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ResponseError

from sessionware.stores.base import ABSENT, Record, StoreError
from sessionware.stores.redis import RedisSessionStore
from tests.factories import redis_cluster
from tests.factories.redis import URL, Server, delete_prefixed, start_server, unique_prefix
from tests.services import free_port, require

TTL = timedelta(minutes=5)
TIMEOUT = 0.5
"""socket and connect timeouts of the stores on the tests' own servers."""
DATA = b'{"v":1,"state":{"user_id":"\\"ferris\\""}}'


def new_id() -> str:
    """An id shaped like the repository's (SHA-256 hex of a key)."""
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


async def assert_all_expire(url: str, prefix: str) -> None:
    """Every key under ``prefix`` on the server at ``url`` has a TTL (nothing is left forever)."""
    client = Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            assert await client.pttl(key) != -1, f"{key!r} has no TTL"
    finally:
        await client.aclose()


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    """A plain client on the shared server, to read and plant records behind the store's back."""
    require("Redis", "127.0.0.1", 6379)
    client = Redis.from_url(URL)
    yield client
    await client.aclose()


@pytest.fixture
async def store(raw: Redis) -> AsyncIterator[RedisSessionStore]:
    """A store on the shared server under a prefix of its own; afterwards every key it left
    must carry a TTL (tests plant keys with one too), then they are deleted."""
    session_store = RedisSessionStore.from_url(URL, key_prefix=unique_prefix())
    yield session_store
    await session_store.aclose()
    try:
        await assert_all_expire(URL, session_store.key_prefix)
    finally:
        await delete_prefixed(URL, session_store.key_prefix)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A redis-server of this test's own, killed afterwards."""
    own = start_server(str(tmp_path), "--enable-debug-command", "yes")
    yield own
    own.stop()


def own_store(url: str, **options: Any) -> RedisSessionStore:
    return RedisSessionStore.from_url(
        url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, **options
    )


async def exercise(store: RedisSessionStore) -> None:
    """Every operation on ids in many hash slots, each checked by reading back."""
    for n in range(12):
        id, user, data, other = new_id(), f"user-{n}", DATA + b" %d" % n, b'{"v":1,"state":{}}'
        version = await store.put(id, data, TTL, expect=ABSENT)
        assert version == sha1(data)
        assert await store.put(id, other, TTL, expect=ABSENT) is None
        assert await store.get(id) == Record(data, version)
        assert await store.put(id, other, TTL, expect=version) == sha1(other)
        assert await store.put(id, data, TTL, expect=version) is None
        assert await store.get(id) == Record(other, sha1(other))
        assert await store.touch(id, TTL)
        await store.index_add(user, id, TTL)
        assert await store.index_members(user) == [id]
        await store.index_remove(user, id)
        assert await store.index_members(user) == []
        await store.delete(id)
        assert await store.get(id) is None
        assert not await store.touch(id, TTL)
        assert await store.put(id, data, TTL, expect=version) is None
        assert await store.get(id) is None


# --- records --------------------------------------------------------------------------------


async def test_every_operation_on_one_server(store: RedisSessionStore) -> None:
    assert store.hash_keys
    await exercise(store)


async def test_missing_id_gets_none(store: RedisSessionStore) -> None:
    assert await store.get(new_id()) is None


async def test_record_is_the_plain_value_at_prefix_and_id(
    store: RedisSessionStore, raw: Redis
) -> None:
    id = new_id()
    await store.put(id, DATA, TTL, expect=ABSENT)
    assert await raw.get(store.key_prefix + id) == DATA
    version = await raw.eval(
        "return redis.sha1hex(redis.call('GET', KEYS[1]))", 1, store.key_prefix + id
    )
    assert (await store.get(id)) == Record(DATA, version.decode())


async def test_actix_layout_without_prefix_or_hashing(raw: Redis) -> None:
    """``hash_keys=False, key_prefix=""``: actix-web's GET/SET of the envelope at the bare key."""
    actix = RedisSessionStore(raw, key_prefix="", hash_keys=False)
    assert not actix.hash_keys
    key = f"sessionware-test-{uuid.uuid4().hex}"  # a key of the tests' own at the top level
    try:
        await raw.set(key, DATA, ex=60)  # what actix-session writes
        record = await actix.get(key)
        assert record == Record(DATA, sha1(DATA))
        assert await actix.put(key, b"{}", TTL, expect=record.version) == sha1(b"{}")
        assert await raw.get(key) == b"{}"
        assert 299 <= await raw.ttl(key) <= 300
    finally:
        await raw.delete(key)


async def test_create_if_absent_collision(store: RedisSessionStore, raw: Redis) -> None:
    id = new_id()
    results = await asyncio.gather(
        *(store.put(id, b"%d" % n, TTL, expect=ABSENT) for n in range(10))
    )
    winners = [n for n, result in enumerate(results) if result is not None]
    assert len(winners) == 1
    assert await raw.get(store.key_prefix + id) == b"%d" % winners[0]


async def test_compare_and_set_conflict(store: RedisSessionStore, raw: Redis) -> None:
    id = new_id()
    first = await store.put(id, b"first", TTL, expect=ABSENT)
    assert first is not None
    results = await asyncio.gather(
        *(store.put(id, b"second %d" % n, TTL, expect=first) for n in range(10))
    )
    assert sum(result is not None for result in results) == 1
    winner = next(result for result in results if result is not None)
    record = await store.get(id)
    assert record is not None and record.version == winner
    assert await store.put(id, b"late", TTL, expect=first) is None
    assert await store.get(id) == record
    # Someone else (actix, say) writing the same id changes its version too.
    await raw.set(store.key_prefix + id, b"actix", ex=60)
    assert await store.put(id, b"late", TTL, expect=winner) is None
    assert await store.put(id, b"late", TTL, expect=sha1(b"actix")) == sha1(b"late")


async def test_compare_and_set_on_a_vanished_record(store: RedisSessionStore, raw: Redis) -> None:
    id = new_id()
    version = await store.put(id, DATA, TTL, expect=ABSENT)
    await raw.delete(store.key_prefix + id)
    assert await store.put(id, DATA, TTL, expect=version) is None
    assert await raw.exists(store.key_prefix + id) == 0  # never re-created


async def test_every_write_sets_the_ttl(store: RedisSessionStore, raw: Redis) -> None:
    async def pttl(id: str) -> int:
        return int(await raw.pttl(store.key_prefix + id))

    id = new_id()
    version = await store.put(id, DATA, TTL, expect=ABSENT)
    assert 299_000 < await pttl(id) <= 300_000
    await store.put(id, b"{}", timedelta(minutes=10), expect=version)
    assert 599_000 < await pttl(id) <= 600_000
    assert await store.touch(id, timedelta(minutes=15))
    assert 899_000 < await pttl(id) <= 900_000
    short = new_id()
    await store.put(short, DATA, timedelta(milliseconds=200), expect=ABSENT)  # never EX 0
    assert 0 < await pttl(short) <= 1_000


async def test_records_expire_in_real_time(store: RedisSessionStore) -> None:
    id, second = new_id(), new_id()
    version = await store.put(id, DATA, timedelta(seconds=1), expect=ABSENT)
    await store.put(second, DATA, timedelta(seconds=1), expect=ABSENT)
    assert await store.touch(second, timedelta(seconds=3))
    await asyncio.sleep(1.2)
    assert await store.get(id) is None
    assert not await store.touch(id, TTL)
    assert await store.put(id, b"{}", TTL, expect=version) is None
    assert await store.get(id) is None
    assert await store.put(id, b"{}", TTL, expect=ABSENT) == sha1(b"{}")  # expired: absent
    assert await store.get(second) == Record(DATA, sha1(DATA))  # touched, still there


async def test_delete(store: RedisSessionStore) -> None:
    id = new_id()
    await store.put(id, DATA, TTL, expect=ABSENT)
    await store.delete(id)
    assert await store.get(id) is None
    await store.delete(id)  # absent: nothing to do


async def test_bytes_that_are_not_utf8_come_back_as_they_are(
    store: RedisSessionStore, raw: Redis
) -> None:
    id, garbage = new_id(), b"\xff\xfe{}"
    await raw.set(store.key_prefix + id, garbage, ex=60)
    record = await store.get(id)
    assert record == Record(garbage, sha1(garbage))
    assert await store.put(id, DATA, TTL, expect=record.version) == sha1(DATA)


async def test_client_that_decodes_responses(store: RedisSessionStore, raw: Redis) -> None:
    client = Redis.from_url(URL, decode_responses=True)
    decoding = RedisSessionStore(client, key_prefix=store.key_prefix)
    try:
        await exercise(decoding)
        id, text = new_id(), '{"v":1,"state":{"é":"\\"ü\\""}}'.encode()
        assert await decoding.put(id, text, TTL, expect=ABSENT) == sha1(text)
        assert await decoding.get(id) == await store.get(id) == Record(text, sha1(text))
        bad = new_id()
        await raw.set(store.key_prefix + bad, b"\xff\xfe", ex=60)
        record = await decoding.get(bad)
        assert record == Record(b"\xff\xfe", sha1(b"\xff\xfe"))
        assert await decoding.put(bad, DATA, TTL, expect=record.version) == sha1(DATA)
        assert await decoding.get(id) == Record(text, sha1(text))  # the client still works
    finally:
        await decoding.aclose()  # not the store's client: stays open
        assert await client.ping()
        await client.aclose()


async def test_wrong_type_is_a_store_error_naming_the_command(
    store: RedisSessionStore, raw: Redis
) -> None:
    id = new_id()
    for name in (store.key_prefix + id, store.key_prefix + "index:" + id):
        await raw.lpush(name, "secret-state")
        await raw.expire(name, 60)
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("GET", lambda: store.get(id)),
        ("EVAL", lambda: store.put(id, DATA, TTL, expect=sha1(DATA))),
        ("EVAL", lambda: store.index_add(id, "member", TTL)),  # the user's index is a list
        ("EVAL", lambda: store.index_members(id)),
    ]
    for command, call in calls:
        with pytest.raises(StoreError) as info:
            await call()
        assert str(info.value).startswith(f"Redis {command} failed: ResponseError: ")
        assert "WRONGTYPE" in str(info.value)
        assert isinstance(info.value.__cause__, ResponseError)
        assert id not in str(info.value) and "secret" not in str(info.value)


def test_bad_url_fails_at_construction() -> None:
    for url in ["not a url", "http://127.0.0.1:6379", "redis://127.0.0.1:notaport"]:
        with pytest.raises(ValueError):
            RedisSessionStore.from_url(url)


# --- the user index -------------------------------------------------------------------------


async def test_index_add_remove_members(store: RedisSessionStore, raw: Redis) -> None:
    ids = sorted(new_id() for _ in range(3))
    for id in ids:
        await store.index_add("ferris", id, TTL)
    await store.index_add("ferris", ids[0], TTL)  # a second add: still one member
    await store.index_add("other", new_id(), TTL)
    assert sorted(await store.index_members("ferris")) == ids
    await store.index_remove("ferris", ids[1])
    await store.index_remove("ferris", new_id())  # not a member: nothing to do
    assert sorted(await store.index_members("ferris")) == [ids[0], ids[2]]
    assert await store.index_members("nobody") == []
    assert await raw.zcard(store.key_prefix + "index:ferris") == 2


async def test_index_never_reads_the_first_versions_sets(
    store: RedisSessionStore, raw: Redis
) -> None:
    old = store.key_prefix + "user:ferris"  # the first version's set of clear keys
    await raw.zadd(old, {"clear-session-key": time.time() + 300})
    await raw.expire(old, 60)
    assert await store.index_members("ferris") == []
    await store.index_add("ferris", "an-id", TTL)
    assert await store.index_members("ferris") == ["an-id"]
    assert await raw.zcard(old) == 1


async def test_index_members_expire_and_a_second_add_moves_the_time(
    store: RedisSessionStore,
) -> None:
    moved, ends = new_id(), new_id()
    await store.index_add("ferris", moved, timedelta(seconds=1))
    await store.index_add("ferris", ends, timedelta(seconds=1))
    await store.index_add("ferris", moved, TTL)
    await asyncio.sleep(1.2)
    assert await store.index_members("ferris") == [moved]


async def test_index_stays_bounded(store: RedisSessionStore, raw: Redis) -> None:
    """A long-lived member keeps the set alive: the short-lived ones must go on the next add."""
    kept, live = new_id(), new_id()
    await store.index_add("ferris", kept, TTL)
    for _ in range(50):
        await store.index_add("ferris", new_id(), timedelta(seconds=1))
    assert await raw.zcard(store.key_prefix + "index:ferris") == 51
    await asyncio.sleep(1.2)
    await store.index_add("ferris", live, TTL)
    assert await raw.zcard(store.key_prefix + "index:ferris") == 2
    assert sorted(await store.index_members("ferris")) == sorted([kept, live])


async def test_index_ttl_covers_its_latest_member(store: RedisSessionStore, raw: Redis) -> None:
    index = store.key_prefix + "index:ferris"
    await store.index_add("ferris", new_id(), timedelta(seconds=10))
    assert 9_000 < await raw.pttl(index) <= 10_000
    await store.index_add("ferris", new_id(), TTL)
    assert 299_000 < await raw.pttl(index) <= 300_000
    await store.index_add("ferris", new_id(), timedelta(seconds=10))  # never shortened
    assert 299_000 < await raw.pttl(index) <= 300_000
    latest = max(score for _, score in await raw.zrange(index, 0, -1, withscores=True))
    assert latest <= time.time() + await raw.pttl(index) / 1000 + 0.05


async def test_index_expires_with_its_members(store: RedisSessionStore, raw: Redis) -> None:
    await store.index_add("ferris", new_id(), timedelta(seconds=1))
    await asyncio.sleep(1.2)
    assert await raw.exists(store.key_prefix + "index:ferris") == 0


# --- a cluster, a Sentinel master, the prefix ------------------------------------------------


async def test_cluster() -> None:
    async with redis_cluster.store() as cluster_store:
        await exercise(cluster_store)
        for n in range(20):  # ids and users spread over the three masters' slots
            await cluster_store.put(new_id(), DATA, TTL, expect=ABSENT)
            await cluster_store.index_add(f"user-{n}", new_id(), TTL)
        for url in redis_cluster.node_urls():
            await assert_all_expire(url, cluster_store.key_prefix)


async def test_sentinel_master(server: Server, tmp_path: Path) -> None:
    config = tmp_path / "sentinel.conf"
    config.write_text(f"sentinel monitor main 127.0.0.1 {server.port} 1\n")
    sentinel_server = start_server(str(tmp_path), "--sentinel", config_file=str(config))
    sentinel = Sentinel([("127.0.0.1", sentinel_server.port)], socket_timeout=TIMEOUT)
    client = sentinel.master_for("main", socket_timeout=TIMEOUT)
    try:
        await exercise(RedisSessionStore(client, key_prefix=unique_prefix()))
    finally:
        await client.aclose()
        for node in sentinel.sentinels:
            await node.aclose()
        sentinel_server.stop()


async def test_writes_only_what_it_is_handed_under_its_prefix(server: Server) -> None:
    """Every key is the prefix plus an id or ``index:`` plus a user, every value and member is
    what the caller passed, and everything expires: the store adds no key material of its own
    (so with ``hash_keys=True`` only the repository's hashes reach the server)."""
    prefix = unique_prefix()
    session_store = own_store(server.url, key_prefix=prefix)
    admin = Redis.from_url(server.url)
    try:
        await exercise(session_store)  # leaves nothing behind
        records = {new_id(): DATA + b" %d" % n for n in range(5)}
        for id, data in records.items():
            await session_store.put(id, data, TTL, expect=ABSENT)
            await session_store.index_add("ferris", id, TTL)
        index = (prefix + "index:ferris").encode()
        assert set(await admin.keys("*")) == {(prefix + id).encode() for id in records} | {index}
        for id, data in records.items():
            assert await admin.get(prefix + id) == data
        assert set(await admin.zrange(index, 0, -1)) == {id.encode() for id in records}
        await assert_all_expire(server.url, "")
    finally:
        await session_store.aclose()
        await admin.aclose()


# --- outages, slowness, dropped connections (own servers) -----------------------------------


def every_operation(store: RedisSessionStore) -> list[tuple[str, Callable[[], Awaitable[object]]]]:
    id = new_id()
    return [
        ("GET", lambda: store.get(id)),
        ("SET", lambda: store.put(id, DATA, TTL, expect=ABSENT)),
        ("EVAL", lambda: store.put(id, DATA, TTL, expect=sha1(DATA))),
        ("EXPIRE", lambda: store.touch(id, TTL)),
        ("DEL", lambda: store.delete(id)),
        ("EVAL", lambda: store.index_add("ferris", id, TTL)),
        ("ZREM", lambda: store.index_remove("ferris", id)),
        ("EVAL", lambda: store.index_members("ferris")),
    ]


async def test_server_killed_is_a_store_error_within_the_timeout(server: Server) -> None:
    session_store = own_store(server.url)
    try:
        await session_store.put(new_id(), DATA, TTL, expect=ABSENT)
        server.stop()
        for command, call in every_operation(session_store):
            started = time.monotonic()
            with pytest.raises(StoreError, match=f"^Redis {command} failed: ConnectionError"):
                await call()
            assert time.monotonic() - started < TIMEOUT + 1
    finally:
        await session_store.aclose()


async def test_server_that_never_answers_times_out() -> None:
    """A port that accepts TCP connections (kernel backlog) but never speaks Redis."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen(8)
        session_store = own_store(f"redis://127.0.0.1:{listener.getsockname()[1]}")
        try:
            for command, call in every_operation(session_store):
                started = time.monotonic()
                with pytest.raises(StoreError, match=f"^Redis {command} failed: TimeoutError"):
                    await call()
                assert time.monotonic() - started < TIMEOUT + 1
        finally:
            await session_store.aclose()


async def test_slow_server_is_a_store_error_within_the_timeout(server: Server) -> None:
    session_store = own_store(server.url)
    admin = Redis.from_url(server.url)
    try:
        id = new_id()
        await session_store.put(id, DATA, TTL, expect=ABSENT)
        sleeping = asyncio.create_task(admin.execute_command("DEBUG", "SLEEP", "1.5"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"^Redis GET failed: TimeoutError"):
            await session_store.get(id)
        assert time.monotonic() - started < TIMEOUT + 1
        await sleeping
        assert await session_store.get(id) == Record(DATA, sha1(DATA))  # a fresh connection
    finally:
        await session_store.aclose()
        await admin.aclose()


async def test_connections_the_server_closed_are_not_an_error(server: Server) -> None:
    session_store = own_store(server.url)
    admin = Redis.from_url(server.url)
    try:
        id = new_id()
        version = await session_store.put(id, DATA, TTL, expect=ABSENT)
        for _ in range(2):
            killed = await admin.execute_command(
                "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )
            assert killed >= 1
            assert await session_store.get(id) == Record(DATA, version)
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert await session_store.put(id, b"{}", TTL, expect=version) == sha1(b"{}")
    finally:
        await session_store.aclose()
        await admin.aclose()


class Cutter:
    """A TCP relay to a real server that cuts the connection at the next requests it relays:
    ``"before"`` drops the request unsent, ``"after"`` lets the server run it, drops the reply."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cuts: list[str] = []
        self.cut_done = 0

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        replies = asyncio.create_task(self._pump(up_reader, writer))
        try:
            while request := await reader.read(65536):
                cut = self.cuts.pop(0) if self.cuts else None
                if cut == "after":
                    replies.cancel()
                    up_writer.write(request)
                    await up_reader.read(65536)  # the server ran it; the reply is lost
                if cut is not None:
                    self.cut_done += 1
                    return
                up_writer.write(request)
        finally:
            replies.cancel()
            writer.close()
            up_writer.close()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            target.write(data)


async def test_dropped_connection_is_retried_once(server: Server) -> None:
    cutter = Cutter(server.port)
    async with cutter as url:
        session_store = own_store(url)
        try:
            id = new_id()
            version = await session_store.put(id, DATA, TTL, expect=ABSENT)
            cutter.cuts = ["before"]
            assert await session_store.get(id) == Record(DATA, version)
            cutter.cuts = ["before"]
            assert await session_store.put(id, b"{}", TTL, expect=version) == sha1(b"{}")
            assert cutter.cut_done == 2
            cutter.cuts = ["before", "before"]  # the retry is cut too: an error, no third try
            with pytest.raises(StoreError, match=r"^Redis GET failed: ConnectionError"):
                await session_store.get(id)
            assert cutter.cut_done == 4
            assert await session_store.get(id) == Record(b"{}", sha1(b"{}"))
            # A write that ran but whose reply was lost: its retry finds the expectation gone.
            cutter.cuts = ["after"]
            other = new_id()
            assert await session_store.put(other, DATA, TTL, expect=ABSENT) is None
            assert await session_store.get(other) == Record(DATA, sha1(DATA))
        finally:
            await session_store.aclose()
