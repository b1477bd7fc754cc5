"""CachedSessionStore across two processes sharing one cache and one durable store.

Each "process" is its own ``CachedSessionStore`` over the same cache store and durable store
(memory in front of SQLite, and a real Redis in front of PostgreSQL). A process is paused at
the exact step a race needs (``Gate`` on its durable store, after the call answered), so each
interleaving runs deterministically: a fill racing a write (issue 28, item 1a), and a cache that
fails right after the durable write (item 1b).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

import pytest

from sessionware.repository import ENDED, Loaded, Repository
from sessionware.state import StoredState
from sessionware.stores import (
    ABSENT,
    MemorySessionStore,
    Record,
    RecordStore,
    SessionKey,
    StoreError,
)
from sessionware.stores.cached import CachedSessionStore
from tests.acceptance.apps import make_app
from tests.client import Gate, RecordingStore, request
from tests.factories import postgres, redis, sqlite

TTL = timedelta(minutes=5)
ID = "d" * 64


@pytest.fixture(params=["memory-sqlite", "redis-postgres"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RecordStore, RecordStore]]:
    """``(cache, durable)``, both shared by every process of the test."""
    if request.param == "memory-sqlite":
        async with sqlite.store() as durable:
            yield MemorySessionStore(), durable
    else:
        async with redis.store() as cache, postgres.store() as durable:
            yield cache, durable


class Outage:
    """A cache hook (``RecordingStore.hook``): once ``start`` is awaited (as the durable store's
    ``after`` hook, right after its first write answered), the next ``calls`` cache calls fail."""

    def __init__(self, calls: int) -> None:
        self.calls, self.left, self.started = calls, 0, False

    async def start(self, name: str) -> None:
        if name == "put" and not self.started:
            self.started, self.left = True, self.calls

    async def __call__(self, name: str) -> None:
        if self.left:
            self.left -= 1
            raise StoreError(f"the cache dropped out ({name})")

    def end(self) -> None:
        self.left = 0


def two_processes(
    shared: tuple[RecordStore, RecordStore],
) -> tuple[CachedSessionStore, CachedSessionStore, RecordingStore]:
    """Processes A and B over the shared stores, and A's durable store, to park A on."""
    cache, durable = shared
    paused = RecordingStore(durable)
    a = CachedSessionStore(cache=cache, durable=paused)
    return a, CachedSessionStore(cache=cache, durable=durable), paused


def faulty_process(
    shared: tuple[RecordStore, RecordStore], outage: Outage
) -> tuple[CachedSessionStore, RecordingStore, RecordingStore]:
    """A process whose cache suffers ``outage`` (from when ``outage.start`` runs): ``(store,
    cache, durable)``, the last two recording their calls."""
    cache, durable = RecordingStore(shared[0]), RecordingStore(shared[1])
    cache.hook = outage
    return CachedSessionStore(cache=cache, durable=durable), cache, durable


async def signed_in(store: RecordStore) -> tuple[SessionKey, Loaded]:
    """A session created through ``store`` and loaded again, as the next request would."""
    key, _ = await Repository(store).create({"user": "ada"}, StoredState(), TTL)
    loaded = await Repository(store).load(key, TTL)
    assert isinstance(loaded, Loaded)
    return key, loaded


# -- a fill racing a write (1a) -------------------------------------------------------------------


@pytest.mark.parametrize("b_loads", ["before", "while A reads"])
async def test_a_fill_racing_a_purge_never_puts_the_session_back(
    shared: tuple[RecordStore, RecordStore], b_loads: str
) -> None:
    (cache, durable), (a, b, paused) = shared, two_processes(shared)
    key, loaded = await signed_in(b)
    await cache.delete(Repository(b).id_of(key))  # the entry is evicted, or its cache_ttl ran out
    gate = paused.after = Gate("get")
    reading = asyncio.create_task(Repository(a).load(key, TTL))  # A misses, reads the session...
    await gate.arrived.wait()  # ... and is paused before it fills the cache
    if b_loads == "while A reads":
        loaded = await Repository(b).load(key, TTL)  # sees A's lease: reads around it
        assert isinstance(loaded, Loaded)
    await Repository(b).purge(loaded)  # B logs out: the durable record becomes a tombstone
    gate.release.set()
    assert isinstance(await reading, Loaded)  # A's read came before the purge
    third = CachedSessionStore(cache=cache, durable=durable)
    for store in (a, b, third):
        assert await Repository(store).load(key, TTL) is ENDED


@pytest.mark.parametrize("write", ["put", "delete"])
async def test_a_fill_racing_a_write_never_puts_back_the_version_it_replaced(
    shared: tuple[RecordStore, RecordStore], write: str
) -> None:
    cache, (a, b, paused) = shared[0], two_processes(shared)
    first = await b.put(ID, b"1", TTL, expect=ABSENT)
    await cache.delete(ID)
    gate = paused.after = Gate("get")
    reading = asyncio.create_task(a.get(ID))
    await gate.arrived.wait()
    expected = None
    if write == "put":
        second = await b.put(ID, b"2", TTL, expect=first)
        expected = Record(b"2", second)
    else:
        await b.delete(ID)
    gate.release.set()
    assert await reading == Record(b"1", first)
    for store in (a, b):
        assert await store.get(ID) == expected


@pytest.mark.parametrize("evicted", [False, True])
async def test_a_creators_fill_racing_the_next_write_never_puts_back_the_first_version(
    shared: tuple[RecordStore, RecordStore], evicted: bool
) -> None:
    cache, (a, b, paused) = shared[0], two_processes(shared)
    gate = paused.after = Gate("put")
    creating = asyncio.create_task(a.put(ID, b"1", TTL, expect=ABSENT))
    await gate.arrived.wait()  # A created the record and is paused before it fills the cache
    first = await b.get(ID)
    assert first is not None
    if evicted:
        await cache.delete(ID)
    second = await b.put(ID, b"2", TTL, expect=first.version)
    gate.release.set()
    assert await creating == first.version
    for store in (a, b):
        assert await store.get(ID) == Record(b"2", second)


# -- a cache failing right after the durable write (1b) ------------------------------------------


async def test_a_cache_call_failing_after_the_purge_is_corrected_by_a_delete(
    shared: tuple[RecordStore, RecordStore],
) -> None:
    outage = Outage(calls=1)
    b, faulty, watched = faulty_process(shared, outage)
    key, loaded = await signed_in(b)
    faulty.calls.clear()
    watched.after = outage.start  # the next cache call after the durable write fails
    await Repository(b).purge(loaded)  # acknowledged: so the cache must not serve the session
    assert faulty.calls[-1] == "delete"  # the failed call, then the delete that corrected it
    other = CachedSessionStore(cache=shared[0], durable=shared[1])
    for store in (b, other):
        assert await Repository(store).load(key, TTL) is ENDED


async def test_a_cache_down_after_the_purge_fails_it_and_a_retry_ends_the_session(
    shared: tuple[RecordStore, RecordStore],
) -> None:
    cache, durable = shared
    outage = Outage(calls=100)
    b, _, watched = faulty_process(shared, outage)
    other = CachedSessionStore(cache=cache, durable=durable)
    key, loaded = await signed_in(b)
    watched.after = outage.start  # every cache call after the durable write fails
    with pytest.raises(StoreError, match="could not be corrected"):
        await Repository(b).purge(loaded)  # never acknowledged: the middleware answers 503
    assert await Repository(durable).load(key, TTL) is ENDED  # the durable write landed
    assert await Repository(b).load(key, TTL) is ENDED  # B reads around the cache it cannot reach
    outage.end()
    # The copy the cache kept is served until its entry expires (at most cache_ttl); a write
    # through it is refused, and the client's retried logout ends the session everywhere.
    stale = await Repository(other).load(key, TTL)
    assert isinstance(stale, Loaded)
    await Repository(other).purge(stale)
    for store in (b, other):
        assert await Repository(store).load(key, TTL) is ENDED


async def test_a_logout_whose_cache_fails_is_a_503_and_its_retry_a_200() -> None:
    async with sqlite.store() as durable:
        outage = Outage(calls=100)
        store, _, watched = faulty_process((MemorySessionStore(), durable), outage)
        app = make_app(store=store)
        login = await request(app, "POST", "/login", json={"user_id": "ada"})
        cookie = login.cookie()
        assert login.status == 200 and cookie is not None
        jar = {"id": cookie.value}
        watched.after = outage.start
        failed = await request(app, "POST", "/logout", cookies=jar)
        assert failed.status == 503 and failed.body == b"" and failed.cookie() is None
        outage.end()
        retried = await request(app, "POST", "/logout", cookies=jar)
        assert retried.status == 200 and retried.text == "Logged out: ada"
        after = await request(app, "GET", "/", cookies=jar)
        assert after.status == 200 and after.json()["user_id"] is None


# -- what each operation costs ---------------------------------------------------------------------


async def test_store_calls_per_operation() -> None:
    """The calls the module docstring and docs/stores.md list, in order (C cache, D durable)."""
    log: list[str] = []

    def recorded(inner: RecordStore, side: str) -> RecordingStore:
        store = RecordingStore(inner)

        async def note(name: str) -> None:
            log.append(f"{side}.{name}")

        store.hook = note
        return store

    cache, durable = MemorySessionStore(), MemorySessionStore()
    store = CachedSessionStore(cache=recorded(cache, "C"), durable=recorded(durable, "D"))

    async def calls(operation: Awaitable[object]) -> list[str]:
        log.clear()
        await operation
        return log[:]

    assert await calls(store.put(ID, b"1", TTL, expect=ABSENT)) == ["C.put", "D.put", "C.put"]
    assert await calls(store.get(ID)) == ["C.get"]  # the hot path
    first = await durable.get(ID)
    assert first is not None
    assert await calls(store.put(ID, b"2", TTL, expect=first.version)) == [
        "D.put",
        "C.get",
        "C.put",
    ]
    assert await calls(store.put(ID, b"x", TTL, expect=first.version)) == ["D.put", "C.delete"]
    assert await calls(store.get(ID)) == ["C.get", "C.put", "D.get", "C.put"]
    second = await durable.get(ID)
    assert second is not None
    await cache.delete(ID)  # evicted
    assert await calls(store.put(ID, b"3", TTL, expect=second.version)) == ["D.put", "C.get"]
    assert await calls(store.touch(ID, TTL)) == ["D.touch"]
    await cache.put(ID, b"l-another-reader", TTL, expect=ABSENT)
    assert await calls(store.get(ID)) == ["C.get", "D.get"]
    assert await calls(store.delete(ID)) == ["D.delete", "C.delete"]
