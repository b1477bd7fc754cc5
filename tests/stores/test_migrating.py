"""MigratingStore: sessions made before the switch keep working, move to ``new`` when written,
stay revoked when ended, and survive races with a move in flight (real stores throughout)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from sessionware.repository import ENDED, RENEWED, Changes, Loaded, Repository
from sessionware.state import TOMBSTONE_HEAD, StoredState
from sessionware.stores import ABSENT, MemorySessionStore, RecordStore, SessionKey, UserIndex
from sessionware.stores.base import Absent, Version
from sessionware.stores.migrating import MigratingStore, _IndexedMigratingStore, _Old
from sessionware.testing.store_contract import Advance, StoreContract
from tests.client import Gate, RecordingStore
from tests.factories import postgres, redis, sqlite
from tests.factories.memory import memory_store
from tests.stores.test_contract import ManualClock

TTL = timedelta(minutes=5)
SHORT = timedelta(seconds=1)


@dataclass
class Stores:
    """An ``old`` and a ``new`` store, and how to let time pass for them."""

    old: RecordStore
    new: RecordStore
    advance: Advance


@asynccontextmanager
async def memory_sqlite() -> AsyncIterator[Stores]:
    clock = ManualClock()

    async def advance(seconds: float) -> None:
        clock.now += seconds + 0.001

    async with sqlite.store(clock) as new:
        yield Stores(memory_store(clock), new, advance)


@asynccontextmanager
async def redis_postgres(old_hash_keys: bool = True) -> AsyncIterator[Stores]:
    async def advance(seconds: float) -> None:
        await asyncio.sleep(seconds + 1.1)  # Redis counts whole seconds

    async with redis.store(hash_keys=old_hash_keys) as old, postgres.store() as new:
        yield Stores(old, new, advance)


PAIRS = {"memory-sqlite": memory_sqlite, "redis-postgres": redis_postgres}


@pytest.fixture(params=sorted(PAIRS))
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    async with PAIRS[request.param]() as pair:
        yield pair


async def before_the_switch(old: RecordStore, state: dict[str, Any], **meta: Any) -> SessionKey:
    """A session made by the app while it ran on ``old`` alone."""
    key, _ = await Repository(old).create(state, StoredState(**meta), TTL)
    return key


async def load(repository: Repository, key: SessionKey) -> Loaded:
    loaded = await repository.load(key, TTL)
    assert isinstance(loaded, Loaded), f"the session should be live, got {loaded!r}"
    return loaded


async def live(repository: Repository, key: SessionKey) -> bool:
    return isinstance(await repository.load(key, TTL), Loaded)


async def held_by(store: RecordStore, id: str) -> bool:
    """Whether ``store`` still holds session state under ``id`` (a tombstone is not state)."""
    record = await store.get(id)
    return record is not None and not record.data.startswith(TOMBSTONE_HEAD)


# -- the contract, over records made before the switch ----------------------------------------


class _MadeBeforeTheSwitch(_IndexedMigratingStore):
    """Creates file records in ``old``, as the app did before it ran on MigratingStore: every
    contract test then reads, writes, renews and ends sessions that still live in ``old``."""

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        if expect is not ABSENT:
            return await super().put(id, data, ttl, expect=expect)
        if await self.new.get(id) is not None:
            return None
        version = await self.old.put(id, data, ttl, expect=ABSENT)
        return None if version is None else _Old(version, self)


class TestSessionsStillInOld(StoreContract):
    @pytest.fixture
    def advance(self, stores: Stores) -> Advance:
        return stores.advance

    @pytest.fixture
    def record_store(self, stores: Stores) -> RecordStore:
        old, new = stores.old, stores.new
        assert isinstance(old, UserIndex) and isinstance(new, UserIndex)
        return _MadeBeforeTheSwitch(old=old, new=new)


# -- what happens to a session made before the switch -----------------------------------------


async def test_a_session_is_read_from_old_and_moves_on_its_first_write(
    stores: Stores,
) -> None:
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"cart": [1]}, user="ada")
    repository = Repository(MigratingStore(old=old, new=new))
    loaded = await load(repository, key)
    assert loaded.state == {"cart": [1]} and loaded.state.user == "ada"
    assert await new.get(loaded.id) is None, "a read alone does not move it"
    saved = await repository.save(loaded, Changes(set={"n": 2}), StoredState(), TTL)
    assert isinstance(saved, Loaded)
    assert not await held_by(old, loaded.id)
    moved = await new.get(loaded.id)
    assert moved is not None and b'"cart":[1]' in moved.data and b'"n":2' in moved.data
    assert (await load(repository, key)).state == {"cart": [1], "n": 2}


async def test_copy_on_read_moves_a_session_when_it_is_read(
    stores: Stores,
) -> None:
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"a": 1})
    repository = Repository(MigratingStore(old=old, new=new, copy_on_read=TTL))
    loaded = await load(repository, key)
    assert not await held_by(old, loaded.id)
    assert (await new.get(loaded.id)) is not None
    assert await repository.save(loaded, Changes(set={"b": 2}), StoredState(), TTL) is not None
    assert (await load(repository, key)).state == {"a": 1, "b": 2}


async def test_a_purge_of_a_session_still_in_old_ends_it_for_good(
    stores: Stores,
) -> None:
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"user_id": "ada"})
    repository = Repository(MigratingStore(old=old, new=new), tombstone_ttl=SHORT)
    slow = await load(repository, key)
    await repository.purge(await load(repository, key))
    assert await repository.load(key, TTL) is ENDED
    assert not await held_by(old, slow.id), "nothing left in old to come back"
    assert await new.get(slow.id) is None, "ended where it was, in old"
    assert await repository.save(slow, Changes(set={"x": 1}), StoredState(), TTL) is None
    await stores.advance(SHORT.total_seconds())  # the tombstone in new expires
    assert not await live(repository, key)
    assert await repository.save(slow, Changes(set={"x": 1}), StoredState(), TTL) is None
    assert not await live(repository, key)


async def test_a_renewal_of_a_session_still_in_old_ends_it_there(
    stores: Stores,
) -> None:
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"cart": [1]})
    repository = Repository(MigratingStore(old=old, new=new))
    renewed = await repository.renew(
        await load(repository, key), Changes(set={"user_id": "ada"}), StoredState(), TTL
    )
    assert isinstance(renewed, tuple)
    assert (await load(repository, renewed[0])).state == {"cart": [1], "user_id": "ada"}
    assert await repository.load(key, TTL) is RENEWED
    assert not await held_by(old, repository.id_of(key))


async def test_sign_out_everywhere_reaches_sessions_still_in_old(
    stores: Stores,
) -> None:
    old, new = stores.old, stores.new
    first = await before_the_switch(old, {"n": 1}, user="ada")
    second = await before_the_switch(old, {"n": 2}, user="ada")
    repository = Repository(MigratingStore(old=old, new=new))
    third, _ = await repository.create({"n": 3}, StoredState(user="ada"), TTL)
    listed = {info.id for info in await repository.sessions_for("ada")}
    assert listed == {repository.id_of(k) for k in (first, second, third)}
    assert await repository.end_all_for("ada") == 3
    for key in (first, second, third):
        assert not await live(repository, key)
    assert await repository.sessions_for("ada") == []


async def test_a_process_still_on_old_never_writes_to_a_moved_session(
    stores: Stores,
) -> None:
    """A rolling deploy: a process not yet on MigratingStore sees a moving or moved session as
    ended, and its writes are refused (never saved in old, where nobody would read them)."""
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"a": 1})
    straggler = Repository(old)
    stale = await load(straggler, key)
    moving, gate = await _parked_move(old, new, key, Changes(set={"b": 2}))
    assert await straggler.load(key, TTL) is ENDED  # the claim marker is a tombstone
    assert await straggler.save(stale, Changes(set={"lost": 1}), StoredState(), TTL) is None
    gate.release.set()
    assert await moving is not None
    assert not await live(straggler, key)
    assert await straggler.save(stale, Changes(set={"lost": 1}), StoredState(), TTL) is None
    assert (await load(Repository(MigratingStore(old=old, new=new)), key)).state == {
        "a": 1,
        "b": 2,
    }


async def test_records_in_old_at_the_record_level(stores: Stores) -> None:
    old, new = stores.old, stores.new
    store = MigratingStore(old=old, new=new)
    id = hashlib.sha256(b"record-level").hexdigest()
    await old.put(id, b'{"n":1}', TTL, expect=ABSENT)
    assert await store.put(id, b'{"n":2}', TTL, expect=ABSENT) is None, "taken in old"
    record = await store.get(id)
    assert record is not None and record.data == b'{"n":1}'
    assert await store.touch(id, TTL) is True and await new.get(id) is None  # touched in old
    await store.delete(id)
    assert await old.get(id) is None and await store.get(id) is None
    assert await store.touch(id, TTL) is False


def test_construction_errors() -> None:
    memory = MemorySessionStore()
    with pytest.raises(TypeError, match="old must be a record store"):
        MigratingStore(old=object(), new=memory)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same store"):
        MigratingStore(old=memory, new=memory)
    with pytest.raises(ValueError, match="keep hash_keys=True on new"):
        MigratingStore(old=MemorySessionStore(), new=MemorySessionStore(hash_keys=False))
    with pytest.raises(ValueError, match="copy_on_read"):
        MigratingStore(old=memory, new=MemorySessionStore(), copy_on_read=timedelta(0))
    both = MigratingStore(old=memory, new=MemorySessionStore())
    assert isinstance(both, UserIndex) and isinstance(both, RecordStore)
    one = MigratingStore(old=memory, new=RecordingStore(_NoIndex()))
    assert not isinstance(one, UserIndex), "an index only when both stores keep one"


class _NoIndex:
    hash_keys = True

    def __init__(self) -> None:
        self.inner = MemorySessionStore()

    async def get(self, id: str) -> Any:
        return await self.inner.get(id)

    async def put(self, id: str, data: bytes, ttl: timedelta, *, expect: Any) -> Any:
        return await self.inner.put(id, data, ttl, expect=expect)

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return await self.inner.touch(id, ttl)

    async def delete(self, id: str) -> None:
        await self.inner.delete(id)


# -- hash_keys=False to True ------------------------------------------------------------------


async def test_from_keys_in_clear_to_hashed_ids_across_stores() -> None:
    async with redis_postgres(old_hash_keys=False) as stores:
        old, new = stores.old, stores.new
        key = await before_the_switch(old, {"a": 1}, user="ada")
        assert await old.get(key) is not None  # filed under the key itself
        store = MigratingStore(old=old, new=new)
        assert store.hash_keys is True
        repository = Repository(store, tombstone_ttl=SHORT)
        loaded = await load(repository, key)
        hashed = hashlib.sha256(key.encode()).hexdigest()
        assert loaded.id == hashed and loaded.state == {"a": 1}
        assert not await held_by(old, key)
        assert await new.get(key) is None, "no key in clear in new, not even a tombstone's"
        record = await new.get(hashed)
        assert record is not None and key.encode() not in record.data
        assert [i.id for i in await repository.sessions_for("ada")] == [hashed]
        await repository.purge(loaded)
        await stores.advance(SHORT.total_seconds())
        assert not await live(repository, key), "never revived from the key in clear"


async def test_from_keys_in_clear_to_hashed_ids_in_one_store() -> None:
    """The same Redis keys seen both ways: the repository's own move does the work."""
    async with redis.store(hash_keys=False) as old:
        new = redis.RedisSessionStore.from_url(redis.URL, key_prefix=old.key_prefix)
        try:
            key = await before_the_switch(old, {"a": 1})
            repository = Repository(MigratingStore(old=old, new=new))
            loaded = await load(repository, key)
            assert loaded.id == hashlib.sha256(key.encode()).hexdigest()
            assert (await load(repository, key)).state == {"a": 1}
            left = await old.get(key)
            assert left is not None and left.data.startswith(b'{"v":0'), "a tombstone, no key"
        finally:
            await new.aclose()


# -- races with a move in flight ----------------------------------------------------------------


async def _parked_move(
    old: RecordStore, new: RecordStore, key: SessionKey, changes: Changes, **options: Any
) -> tuple[asyncio.Task[Any], Gate]:
    """A request that loaded ``key`` from ``old`` and is moving it with ``changes``, parked
    between its claim in ``old`` and its landing in ``new``."""
    landing = RecordingStore(new)
    gate = Gate("put")
    landing.hook = gate
    repository = Repository(MigratingStore(old=old, new=landing, **options))
    loaded = await load(repository, key)
    task = asyncio.create_task(repository.save(loaded, changes, StoredState(), TTL))
    await asyncio.wait_for(gate.arrived.wait(), timeout=10)
    landing.hook = None
    return task, gate


async def test_a_write_during_a_move_is_not_lost(stores: Stores) -> None:
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"start": 0})
    other = Repository(MigratingStore(old=old, new=new))  # another process
    stale = await load(other, key)  # read from old before the claim
    moving, gate = await _parked_move(old, new, key, Changes(set={"a": 1}))
    writing = asyncio.create_task(other.save(stale, Changes(set={"b": 2}), StoredState(), TTL))
    await asyncio.sleep(0.05)
    assert not writing.done(), "it waits for the move instead of seeing the session gone"
    gate.release.set()
    assert await moving is not None and await writing is not None
    assert (await load(other, key)).state == {"start": 0, "a": 1, "b": 2}


async def test_a_purge_during_a_move_is_never_undone(
    stores: Stores,
) -> None:
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"user_id": "ada"})
    other = Repository(MigratingStore(old=old, new=new), tombstone_ttl=SHORT)
    logout = await load(other, key)
    moving, gate = await _parked_move(old, new, key, Changes(set={"late": 1}))
    purging = asyncio.create_task(other.purge(logout))
    await asyncio.sleep(0.05)
    gate.release.set()
    await moving
    await purging
    assert await other.load(key, TTL) is ENDED
    await stores.advance(SHORT.total_seconds())
    assert not await live(other, key)
    assert not await held_by(old, logout.id)


async def test_a_stalled_move_is_ended_and_never_lands_late(
    stores: Stores,
) -> None:
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"a": 1})
    timeout = timedelta(seconds=0.2)
    moving, gate = await _parked_move(old, new, key, Changes(set={"late": 1}), move_timeout=timeout)
    reader = Repository(MigratingStore(old=old, new=new, move_timeout=timeout))
    assert await reader.load(key, TTL) is ENDED  # waited 0.2 s, then ended the move
    gate.release.set()
    assert await moving is None, "the parked write finds the session ended"
    assert await reader.load(key, TTL) is ENDED


async def test_an_abort_racing_a_landing_is_final(stores: Stores) -> None:
    """A reader gives up on a move and aborts it just as the move lands: whichever wins, the
    session is then ended for everybody (a landed move takes its record back)."""
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {"a": 1})
    timeout = timedelta(seconds=0.1)
    moving, gate = await _parked_move(old, new, key, Changes(set={"b": 2}))
    watched = RecordingStore(new)
    reader = Repository(MigratingStore(old=old, new=watched, move_timeout=timeout))
    aborting = Gate("put")
    watched.hook = aborting
    reading = asyncio.create_task(reader.load(key, TTL))
    await asyncio.wait_for(aborting.arrived.wait(), timeout=10)  # about to end it in new
    gate.release.set()
    assert await moving is None, "its confirm lost to the abort"
    aborting.release.set()
    assert not isinstance(await reading, Loaded)
    assert not await live(Repository(MigratingStore(old=old, new=new)), key)


async def test_a_move_stalled_past_every_tombstone_never_lands() -> None:
    """The reader's tombstone in new and the marker in old have both expired when the parked
    write goes on: it must still not land (it checks its own time since the claim)."""
    async with memory_sqlite() as stores:
        key = await before_the_switch(stores.old, {"a": 1})
        timeout = timedelta(seconds=0.1)
        moving, gate = await _parked_move(
            stores.old, stores.new, key, Changes(set={"late": 1}), move_timeout=timeout
        )
        reader = Repository(MigratingStore(old=stores.old, new=stores.new, move_timeout=timeout))
        assert await reader.load(key, TTL) is ENDED
        await stores.advance(3600)
        assert await reader.load(key, TTL) is None  # nothing left anywhere
        gate.release.set()
        assert await moving is None
        assert not await live(reader, key)


async def test_a_read_racing_a_whole_move_still_finds_the_session(stores: Stores) -> None:
    """The read misses in new, the move lands and clears old, then the read looks in old."""
    key = await before_the_switch(stores.old, {"a": 1})
    watched = RecordingStore(stores.old)
    reader = Repository(MigratingStore(old=watched, new=stores.new))
    gate = Gate("get")
    watched.hook = gate
    reading = asyncio.create_task(reader.load(key, TTL))
    await asyncio.wait_for(gate.arrived.wait(), timeout=10)
    watched.hook = None
    writer = Repository(MigratingStore(old=stores.old, new=stores.new))
    loaded = await load(writer, key)
    assert await writer.save(loaded, Changes(set={"b": 2}), StoredState(), TTL) is not None
    assert not await held_by(stores.old, loaded.id)
    gate.release.set()
    found = await reading
    assert isinstance(found, Loaded) and found.state == {"a": 1, "b": 2}


async def test_many_writers_through_many_processes_lose_nothing(
    stores: Stores,
) -> None:
    old, new = stores.old, stores.new
    key = await before_the_switch(old, {})
    processes = [Repository(MigratingStore(old=old, new=new)) for _ in range(4)]
    copying = Repository(MigratingStore(old=old, new=new, copy_on_read=TTL))
    loads = [await load(p, key) for p in processes]  # every one read the record in old

    async def write(n: int) -> None:
        repository = processes[n % 4]
        loaded = loads[n % 4] if n < 4 else await load(repository, key)
        saved = await repository.save(loaded, Changes(set={f"k{n}": n}), StoredState(), TTL)
        assert saved is not None

    await asyncio.gather(*(write(n) for n in range(12)), load(copying, key))
    assert (await load(copying, key)).state == {f"k{n}": n for n in range(12)}
    assert not await held_by(old, loads[0].id)
