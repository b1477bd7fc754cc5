"""What the memcached store adds to the contract: its keys, the cas token as the version,
memcached's 30-day TTL rule, no user index, several servers, and a server that goes away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import emcache
import pytest

from sessionware import SessionAdmin
from sessionware.stores import ABSENT, NotSupportedError, StoreError, UserIndex
from sessionware.stores.memcached import MemcachedSessionStore
from tests.factories import memcached as factory
from tests.services import free_port

TTL = timedelta(minutes=5)
ID = "a" * 64


@pytest.fixture
def server() -> Iterator[factory.Server]:
    server = factory.start_server()
    yield server
    server.stop()


@pytest.fixture
async def store(server: factory.Server) -> AsyncIterator[MemcachedSessionStore]:
    sessions = MemcachedSessionStore.from_url(server.url, key_prefix="t:", timeout=0.5)
    yield sessions
    await sessions.aclose()


async def raw(server: factory.Server, key: str) -> emcache.Item | None:
    """The item under ``key``, read through a client of the test's own."""
    client = await emcache.create_client([emcache.MemcachedHostAddress("127.0.0.1", server.port)])
    try:
        return await client.gets(key.encode())
    finally:
        await client.close()


async def test_records_are_plain_values_under_the_prefix(
    store: MemcachedSessionStore, server: factory.Server
) -> None:
    version = await store.put(ID, b'{"v":1}', TTL, expect=ABSENT)
    item = await raw(server, "t:" + ID)
    assert item is not None and item.value == b'{"v":1}' and item.cas == version
    assert store.hash_keys is True


async def test_versions_are_the_cas_tokens(store: MemcachedSessionStore) -> None:
    first = await store.put(ID, b"1", TTL, expect=ABSENT)
    record = await store.get(ID)
    assert record is not None and record.version == first
    second = await store.put(ID, b"2", TTL, expect=first)
    assert second is not None and second != first
    assert await store.put(ID, b"3", TTL, expect=first) is None  # stale token: refused
    assert await store.put(ID, b"3", TTL, expect="not a token") is None
    third = await store.put(ID, b"3", TTL, expect=second)
    record = await store.get(ID)
    assert record is not None and (record.data, record.version) == (b"3", third)


async def test_short_ttls_and_create_over_an_expired_item(store: MemcachedSessionStore) -> None:
    first = await store.put(ID, b"1", timedelta(seconds=1), expect=ABSENT)
    assert await store.put(ID, b"2", timedelta(seconds=1), expect=ABSENT) is None
    await asyncio.sleep(2.1)  # memcached counts whole seconds
    assert await store.get(ID) is None
    assert await store.touch(ID, TTL) is False
    assert await store.put(ID, b"3", TTL, expect=first) is None
    assert await store.put(ID, b"4", TTL, expect=ABSENT) is not None


async def test_touch_keeps_the_version(store: MemcachedSessionStore) -> None:
    version = await store.put(ID, b"1", timedelta(seconds=1), expect=ABSENT)
    assert await store.touch(ID, TTL) is True
    await asyncio.sleep(2.1)
    record = await store.get(ID)
    assert record is not None and record.version == version
    await store.delete(ID)
    await store.delete(ID)
    assert await store.get(ID) is None


async def test_ttls_over_thirty_days_are_sent_as_unix_times(
    store: MemcachedSessionStore,
) -> None:
    thirty = timedelta(days=30)
    assert store._exptime(thirty) == 30 * 86400  # relative, up to 30 days
    assert abs(store._exptime(thirty + timedelta(seconds=1)) - (time.time() + 30 * 86400 + 1)) < 2
    # Sent as a relative 31 days, memcached would read a time in 1970: gone at once.
    await store.put(ID, b"long", timedelta(days=31), expect=ABSENT)
    record = await store.get(ID)
    assert record is not None and record.data == b"long"
    assert await store.touch(ID, timedelta(days=400)) is True
    assert await store.get(ID) is not None


async def test_no_user_index(store: MemcachedSessionStore) -> None:
    """Issue 24: all three admin operations say NotSupportedError (the 0.1 store methods
    raised AttributeError where the docs promised it), and so do the deprecated methods."""
    assert not isinstance(store, UserIndex)
    admin = SessionAdmin(store)
    with pytest.raises(NotSupportedError, match="per-user index"):
        await admin.sessions_for("ada")
    with pytest.raises(NotSupportedError, match="per-user index"):
        await admin.end_all_for("ada")
    with pytest.raises(NotSupportedError, match="per-user index"):
        await admin.end_session("0" * 64)
    for call in (
        lambda: store.sessions_for("ada"),
        lambda: store.delete_all_for("ada"),
        lambda: store.end_session("0" * 64),
    ):
        with pytest.warns(DeprecationWarning), pytest.raises(NotSupportedError):
            await call()


def test_key_prefixes_are_checked_at_construction() -> None:
    for prefix in ("has space", "tab\t", "new\nline", "ü:", "x" * 187):
        with pytest.raises(ValueError, match="key_prefix"):
            MemcachedSessionStore(None, key_prefix=prefix)
    MemcachedSessionStore(None, key_prefix="x" * 186)
    MemcachedSessionStore(None, key_prefix="")
    for url in ("redis://h:1", "memcached://"):
        with pytest.raises(ValueError, match="URL"):
            MemcachedSessionStore.from_url(url)


async def test_ids_memcached_cannot_take_are_store_errors(store: MemcachedSessionStore) -> None:
    for bad in ("with space", "x" * 300, "ünï"):
        with pytest.raises(StoreError):
            await store.get(bad)


async def test_several_servers_share_the_keys() -> None:
    servers = [factory.start_server(), factory.start_server()]
    try:
        url = "memcached://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
        store = MemcachedSessionStore.from_url(url, key_prefix="t:")
        ids = [f"{n:064d}" for n in range(40)]
        for id in ids:
            assert await store.put(id, id.encode(), TTL, expect=ABSENT) is not None
        for id in ids:
            record = await store.get(id)
            assert record is not None and record.data == id.encode()
        holders = []
        for s in servers:
            holders.append(sum([await raw(s, "t:" + id) is not None for id in ids]))
        assert sum(holders) == 40 and min(holders) > 0
        await store.aclose()
    finally:
        for s in servers:
            s.stop()


async def test_no_server_is_a_store_error() -> None:
    store = MemcachedSessionStore.from_url(f"memcached://127.0.0.1:{free_port()}", timeout=0.3)
    with pytest.raises(StoreError, match="failed to get") as caught:
        await store.get(ID)
    assert ID not in str(caught.value)
    await store.aclose()


async def test_server_stopped_and_restarted_mid_load() -> None:
    """While the server is down every call is a StoreError; once it is back on the same port
    the store works again. memcached keeps nothing across a restart: the sessions are gone
    (a get says None), never wrong."""
    server = factory.start_server()
    store = MemcachedSessionStore.from_url(server.url, key_prefix="t:", timeout=0.3)
    try:
        for n in range(20):
            await store.put(f"id{n}", b"%d" % n, TTL, expect=ABSENT)
        failures: list[BaseException] = []

        async def load() -> None:
            for n in range(100):
                try:
                    record = await store.get(f"id{n % 20}")
                    assert record is None or record.data == b"%d" % (n % 20)
                except StoreError as exc:
                    failures.append(exc)
                await asyncio.sleep(0.005)

        worker = asyncio.create_task(load())
        await asyncio.sleep(0.1)
        server.stop()
        await asyncio.sleep(0.3)
        with pytest.raises(StoreError):
            await store.put("id0", b"x", TTL, expect=ABSENT)
        server = factory.start_server(server.port)
        await worker
        assert failures and all(isinstance(f, StoreError) for f in failures)
        for _ in range(50):  # emcache reconnects in the background
            try:
                assert await store.get("id0") is None
                break
            except StoreError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the store did not recover after the server came back")
        assert await store.put("id0", b"new", TTL, expect=ABSENT) is not None
        record = await store.get("id0")
        assert record is not None and record.data == b"new"
    finally:
        await store.aclose()
        server.stop()
