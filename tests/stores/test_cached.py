"""The cached store: reads served from the cache and filled from the durable store, writes
decided by the durable store, stale copies dropped, and either side failing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest

from sessionware import SessionAdmin
from sessionware.repository import Changes, Loaded, Repository
from sessionware.state import StoredState
from sessionware.stores import (
    ABSENT,
    MemorySessionStore,
    NotSupportedError,
    Record,
    RecordStore,
    StoreError,
    UserIndex,
)
from sessionware.stores.cached import CachedSessionStore, _pack, _unpack
from sessionware.stores.memcached import MemcachedSessionStore
from sessionware.stores.mysql import MySQLSessionStore
from sessionware.testing.store_contract import StoreContract
from tests.factories import memcached as memcached_factory
from tests.factories import mysql as mysql_factory
from tests.services import free_port

TTL = timedelta(minutes=5)
ID = "c" * 64


@pytest.fixture
async def durable() -> AsyncIterator[MySQLSessionStore]:
    async with mysql_factory.store() as store:
        yield store


@pytest.fixture
def memcached() -> Iterator[memcached_factory.Server]:
    server = memcached_factory.start_server()
    yield server
    server.stop()


def in_process(durable: RecordStore, cache_ttl: float = 30) -> CachedSessionStore:
    """What one app process runs: its own memory cache in front of the shared durable store."""
    return CachedSessionStore(
        cache=MemorySessionStore(), durable=durable, cache_ttl=timedelta(seconds=cache_ttl)
    )


class TestMemcachedOverMySQL(StoreContract):
    """The shipped contract, over a shared memcached cache in front of MariaDB."""

    @pytest.fixture
    async def record_store(
        self, durable: MySQLSessionStore, memcached: memcached_factory.Server
    ) -> AsyncIterator[CachedSessionStore]:
        cache = MemcachedSessionStore.from_url(memcached.url)
        yield CachedSessionStore(cache=cache, durable=durable)
        await cache.aclose()


async def test_a_read_fills_the_cache_with_the_durable_version(durable: MySQLSessionStore) -> None:
    store = in_process(durable)
    version = await durable.put(ID, b'{"n":1}', TTL, expect=ABSENT)
    assert await store.get(ID) == Record(b'{"n":1}', version)
    entry = await store.cache.get(ID)
    assert entry is not None and _unpack(entry.data) == Record(b'{"n":1}', version)
    await durable.delete(ID)  # behind the cache's back: the copy is still served
    assert await store.get(ID) == Record(b'{"n":1}', version)


async def test_an_evicted_entry_is_read_from_the_durable_store(durable: MySQLSessionStore) -> None:
    store = in_process(durable)
    version = await store.put(ID, b'{"n":1}', TTL, expect=ABSENT)
    await store.cache.delete(ID)
    assert await store.get(ID) == Record(b'{"n":1}', version)
    assert await store.cache.get(ID) is not None  # filled again


async def test_writes_go_to_the_durable_store_then_the_cache(durable: MySQLSessionStore) -> None:
    store = in_process(durable)
    first = await store.put(ID, b'{"n":1}', TTL, expect=ABSENT)
    second = await store.put(ID, b'{"n":2}', TTL, expect=first)
    assert await durable.get(ID) == Record(b'{"n":2}', second)
    entry = await store.cache.get(ID)
    assert entry is not None and _unpack(entry.data) == Record(b'{"n":2}', second)
    assert await store.put(ID, b'{"n":3}', TTL, expect=ABSENT) is None
    assert await store.touch(ID, TTL) is True
    await store.delete(ID)
    assert await store.cache.get(ID) is None and await durable.get(ID) is None


async def test_a_write_from_a_stale_copy_is_refused_and_the_copy_dropped(
    durable: MySQLSessionStore,
) -> None:
    a, b = in_process(durable), in_process(durable)
    first = await a.put(ID, b'{"n":1}', TTL, expect=ABSENT)
    assert (await b.get(ID)) == Record(b'{"n":1}', first)  # b caches version 1
    second = await a.put(ID, b'{"n":2}', TTL, expect=first)
    stale = await b.get(ID)
    assert stale == Record(b'{"n":1}', first)  # served from b's cache, within cache_ttl
    assert await b.put(ID, b'{"n":"stale"}', TTL, expect=stale.version) is None
    assert await b.cache.get(ID) is None  # dropped: the retry reads the durable record
    assert await b.get(ID) == Record(b'{"n":2}', second)


async def test_an_ended_session_is_never_revived_by_a_stale_copy(
    durable: MySQLSessionStore,
) -> None:
    a, b = in_process(durable, cache_ttl=1), in_process(durable, cache_ttl=1)
    key, _ = await Repository(a).create({"n": 1}, StoredState(), TTL)
    assert await Repository(b).load(key, TTL) is not None  # b caches it
    loaded = await Repository(a).load(key, TTL)
    assert loaded is not None
    await Repository(a).purge(loaded)
    # b may still read its copy for up to cache_ttl; a write from it ends the session instead.
    stale = await Repository(b).load(key, TTL)
    assert stale is not None
    assert await Repository(b).save(stale, Changes(set={"n": 2}), StoredState(), TTL) is None
    assert not isinstance(
        await Repository(b).load(key, TTL), Loaded
    )  # the copy went with the refused write
    assert not isinstance(await Repository(a).load(key, TTL), Loaded)


async def test_a_per_process_copy_lives_at_most_cache_ttl(durable: MySQLSessionStore) -> None:
    a, b = in_process(durable, cache_ttl=1), in_process(durable, cache_ttl=1)
    key, _ = await Repository(a).create({"n": 1}, StoredState(), TTL)
    assert await Repository(b).load(key, TTL) is not None
    loaded = await Repository(a).load(key, TTL)
    assert loaded is not None
    await Repository(a).purge(loaded)
    await asyncio.sleep(1.1)
    assert not isinstance(await Repository(b).load(key, TTL), Loaded)


async def test_a_shared_cache_ends_a_session_for_every_process(
    durable: MySQLSessionStore, memcached: memcached_factory.Server
) -> None:
    caches = [MemcachedSessionStore.from_url(memcached.url) for _ in range(2)]
    a, b = (CachedSessionStore(cache=c, durable=durable) for c in caches)
    try:
        key, _ = await Repository(a).create({"n": 1}, StoredState(), TTL)
        assert await Repository(b).load(key, TTL) is not None
        loaded = await Repository(a).load(key, TTL)
        assert loaded is not None
        await Repository(a).purge(loaded)
        assert not isinstance(
            await Repository(b).load(key, TTL), Loaded
        )  # no waiting for cache_ttl
    finally:
        for cache in caches:
            await cache.aclose()


async def test_a_durable_failure_is_a_store_error_never_a_cached_write() -> None:
    down = MySQLSessionStore.from_dsn(f"mysql://root@127.0.0.1:{free_port()}/test")
    store = in_process(down)
    await store.cache.put(ID, _pack(7, b'{"n":1}') or b"", TTL, expect=ABSENT)
    with pytest.raises(StoreError):
        await store.put(ID, b'{"n":2}', TTL, expect=7)
    assert await store.cache.get(ID) is None  # dropped: the write may or may not have landed
    with pytest.raises(StoreError):
        await store.get(ID)  # nothing cached: no answer but the durable store's
    with pytest.raises(StoreError):
        await store.touch(ID, TTL)
    await down.aclose()


async def test_a_cache_down_is_read_around_and_fails_writes_after_they_land(
    durable: MySQLSessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    cache = MemcachedSessionStore.from_url(f"memcached://127.0.0.1:{free_port()}", timeout=0.2)
    store = CachedSessionStore(cache=cache, durable=durable)
    version = await durable.put(ID, b'{"n":1}', TTL, expect=ABSENT)
    with caplog.at_level(logging.WARNING, "sessionware.stores.cached"):
        assert await store.get(ID) == Record(b'{"n":1}', version)
        # The write lands, but the cache could not be corrected: no acknowledgement.
        with pytest.raises(StoreError, match="could not be corrected"):
            await store.put(ID, b'{"n":2}', TTL, expect=version)
        current = await durable.get(ID)
        assert current is not None and current.data == b'{"n":2}'
        with pytest.raises(StoreError, match="could not be corrected"):
            await store.delete(ID)
        assert await durable.get(ID) is None
    assert caplog.records and all(r.levelno == logging.WARNING for r in caplog.records)
    assert not any(ID in r.getMessage() for r in caplog.records)
    await cache.aclose()


async def test_the_cache_server_stopped_and_restarted_mid_load(
    durable: MySQLSessionStore,
) -> None:
    server = memcached_factory.start_server()
    cache = MemcachedSessionStore.from_url(server.url, timeout=0.2)
    store = CachedSessionStore(cache=cache, durable=durable)
    try:
        versions = [await store.put(f"{n:064d}", b"%d" % n, TTL, expect=ABSENT) for n in range(10)]

        async def load() -> None:
            for n in range(60):
                record = await store.get(f"{n % 10:064d}")  # never an error: durable answers
                assert record == Record(b"%d" % (n % 10), versions[n % 10])
                await asyncio.sleep(0.01)

        worker = asyncio.create_task(load())
        await asyncio.sleep(0.1)
        server.stop()
        await asyncio.sleep(0.3)
        server = memcached_factory.start_server(server.port)
        await worker
        assert await store.put(f"{0:064d}", b"new", TTL, expect=versions[0]) is not None
    finally:
        await cache.aclose()
        server.stop()


async def test_the_index_is_the_durable_stores(durable: MySQLSessionStore) -> None:
    store = in_process(durable)
    assert isinstance(store, UserIndex) and isinstance(store, CachedSessionStore)
    await store.index_add("ada", ID, TTL)
    assert await durable.index_members("ada") == [ID]
    assert await store.index_members("ada") == [ID]
    await store.index_remove("ada", ID)
    assert await durable.index_members("ada") == []


async def test_without_a_durable_index_there_is_none(memcached: memcached_factory.Server) -> None:
    durable = MemcachedSessionStore.from_url(memcached.url, hash_keys=False)
    store = in_process(durable)
    assert not isinstance(store, UserIndex) and store.hash_keys is False
    with pytest.raises(NotSupportedError):
        await SessionAdmin(store).sessions_for("ada")
    await durable.aclose()


def test_configuration_is_checked() -> None:
    with pytest.raises(TypeError, match="cache"):
        CachedSessionStore(cache=object(), durable=MemorySessionStore())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_ttl"):
        CachedSessionStore(
            cache=MemorySessionStore(), durable=MemorySessionStore(), cache_ttl=timedelta(0)
        )


def test_cache_entries_carry_int_and_str_versions() -> None:
    assert _unpack(_pack(12, b"x\ny") or b"") == Record(b"x\ny", 12)
    assert _unpack(_pack("ab12", b"{}") or b"") == Record(b"{}", "ab12")
    assert _pack(("a", 1), b"{}") is None  # not cacheable: always read from the durable store
    assert _unpack(b"garbage") is None and _unpack(b"i--5\n{}") is None
    assert _unpack(b"l" + b"0" * 32) is None  # a lease holds no record


async def test_a_late_cache_update_never_restores_an_older_version(
    durable: MySQLSessionStore, memcached: memcached_factory.Server
) -> None:
    cache = MemcachedSessionStore.from_url(memcached.url)
    a, b = (
        CachedSessionStore(cache=cache, durable=durable),
        CachedSessionStore(cache=cache, durable=durable),
    )
    try:
        v1 = await a.put(ID, b"1", TTL, expect=ABSENT)
        v2 = await durable.put(ID, b"2", TTL, expect=v1)  # a's write, its cache update delayed
        v3 = await b.put(ID, b"3", TTL, expect=v2)  # b's write after it, cache and all
        await a._correct(ID, v1, None, Record(b"2", v2), TTL)  # a's correction arrives last
        assert await a.get(ID) == Record(b"3", v3)
    finally:
        await cache.aclose()


async def test_one_process_reads_its_own_writes_under_concurrency(
    durable: MySQLSessionStore,
) -> None:
    store = in_process(durable)
    await store.put(ID, b"0", TTL, expect=ABSENT)

    async def writer(n: int) -> None:
        for _ in range(50):
            record = await store.get(ID)
            assert record is not None
            if await store.put(ID, b"%d" % n, TTL, expect=record.version) is not None:
                return
        pytest.fail("a writer never got its turn")

    async def reader() -> None:
        for _ in range(20):
            await store.get(ID)
            await store.cache.delete(ID)  # evictions meanwhile

    await asyncio.gather(*(writer(n) for n in range(1, 9)), reader(), reader())
    latest = await durable.get(ID)
    assert latest is not None and await store.get(ID) == latest
