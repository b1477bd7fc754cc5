"""The repository's rules, over every record store: renewal under faults, late writes after a
login, read-modify-write updates. (The shipped contract suite covers the rest.)"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

from sessionware import Key, SessionMiddleware, get_session
from sessionware.errors import StoreError
from sessionware.repository import (
    ENDED,
    RENEWED,
    Changes,
    Followed,
    Loaded,
    Repository,
    Update,
)
from sessionware.state import TOMBSTONE_HEAD, StoredState, read_rotation
from sessionware.stores import MemorySessionStore
from sessionware.stores.base import (
    Absent,
    Record,
    RecordStore,
    UserIndex,
    Version,
    generate_session_key,
)
from tests.client import request

TTL = timedelta(minutes=5)


class Faulty:
    """A record store that wraps another and, once armed, meddles with the next tombstone
    write: ``lost`` lets it land and then loses the reply (the caller sees ``StoreError``);
    ``retried`` runs it twice, as a client that retries after a dropped connection does (the
    second try finds its own write and reports a failed expectation); ``failed`` fails it
    before it lands."""

    def __init__(self, inner: RecordStore, fault: str) -> None:
        self.inner, self.fault, self.armed = inner, fault, False
        self.hash_keys = inner.hash_keys
        self.faults = 0

    async def get(self, id: str) -> Record | None:
        return await self.inner.get(id)

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        if not (self.armed and data.startswith(TOMBSTONE_HEAD)):
            return await self.inner.put(id, data, ttl, expect=expect)
        self.armed, self.faults = False, self.faults + 1
        if self.fault == "failed":
            raise StoreError("the connection dropped before the write")
        landed = await self.inner.put(id, data, ttl, expect=expect)
        if self.fault == "lost":
            raise StoreError("the connection dropped after the write")
        assert landed is not None
        return await self.inner.put(id, data, ttl, expect=expect)  # the retry: None

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return await self.inner.touch(id, ttl)

    async def delete(self, id: str) -> None:
        await self.inner.delete(id)


@pytest.mark.parametrize("fault", ["lost", "retried", "failed"])
async def test_a_renewal_whose_swap_answer_is_lost_keeps_the_user_signed_in(
    server_store: RecordStore, fault: str
) -> None:
    """Issue 24: a renewal that cannot tell whether its tombstone landed reads the old record
    again (a tombstone naming its new record means it did); a client's retry of its own
    tombstone is no conflict. Before, the new session was deleted: logged out, state gone."""
    store = Faulty(server_store, fault)
    repository = Repository(store)  # type: ignore[arg-type]
    key, _ = await repository.create({"cart": [1]}, StoredState(), TTL)
    loaded = await repository.load(key, TTL)
    assert isinstance(loaded, Loaded)
    store.armed = True
    renewed = await repository.renew(loaded, Changes(set={"user": "ada"}), StoredState(), TTL)
    assert store.faults == 1
    assert isinstance(renewed, tuple), "the user stays signed in"
    new_key, _ = renewed
    fresh = await repository.load(new_key, TTL)
    assert isinstance(fresh, Loaded) and fresh.state == {"cart": [1], "user": "ada"}
    assert await repository.load(key, TTL) is RENEWED


async def test_through_the_middleware_a_lost_answer_still_logs_in(
    server_store: RecordStore,
) -> None:
    store = Faulty(server_store, "lost")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = get_session(scope)
        if scope["path"] == "/login":
            session["user"] = "ada"
            session.renew()
        body = str(session.get("user")).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    asgi = SessionMiddleware(app, store=store, key=Key.generate())  # type: ignore[arg-type]
    first = (await request(asgi, "POST", "/start", headers=[])).cookie()
    assert first is None  # an empty session is not stored
    r = await request(asgi, "POST", "/login")
    cookie = r.cookie()
    assert cookie is not None
    store.armed = True
    r = await request(asgi, "POST", "/login", cookies={"id": cookie.value})
    renewed = r.cookie()
    assert r.status == 200 and renewed is not None and renewed.value != cookie.value
    assert (await request(asgi, "GET", "/", cookies={"id": renewed.value})).text == "ada"
    assert (await request(asgi, "GET", "/", cookies={"id": cookie.value})).text == "None"


async def test_a_write_that_loaded_before_a_login_stores_nothing(server_store: RecordStore) -> None:
    repository = Repository(server_store)
    key, _ = await repository.create({"a": 1}, StoredState(), TTL)
    early = await repository.load(key, TTL)
    login = await repository.load(key, TTL)
    assert isinstance(early, Loaded) and isinstance(login, Loaded)
    renewed = await repository.renew(login, Changes(set={"user": "ada"}), StoredState(), TTL)
    assert isinstance(renewed, tuple)
    saved = await repository.save(early, Changes(set={"payout": "attacker"}), StoredState(), TTL)
    assert saved is RENEWED
    stored = await repository.load(renewed[0], TTL)
    assert isinstance(stored, Loaded) and "payout" not in stored.state


async def test_a_purge_is_ended_not_renewed(server_store: RecordStore) -> None:
    repository = Repository(server_store)
    key, _ = await repository.create({"a": 1}, StoredState(), TTL)
    loaded = await repository.load(key, TTL)
    assert isinstance(loaded, Loaded)
    await repository.purge(loaded)
    assert await repository.load(key, TTL) is ENDED
    assert await repository.save(loaded, Changes(set={"b": 2}), StoredState(), TTL) is None


async def test_updates_never_lose_an_increment(server_store: RecordStore) -> None:
    """Issue 30 item 3: each request's update is applied to the value stored when it lands."""
    repository = Repository(server_store)
    key, _ = await repository.create({"n": 0}, StoredState(), TTL)
    loads = [await repository.load(key, TTL) for _ in range(5)]  # all loaded n=0
    increment = Changes(updates={"n": (Update(lambda n: n + 1, 1),)})
    for loaded in loads:
        assert isinstance(loaded, Loaded)
        assert isinstance(await repository.save(loaded, increment, StoredState(), TTL), Loaded)
    final = await repository.load(key, TTL)
    assert isinstance(final, Loaded) and final.state == {"n": 5}


async def test_an_update_that_cannot_apply_is_a_session_error(server_store: RecordStore) -> None:
    from sessionware.errors import SessionUpdateError

    repository = Repository(server_store)
    key, _ = await repository.create({"n": "text"}, StoredState(), TTL)
    loaded = await repository.load(key, TTL)
    assert isinstance(loaded, Loaded)
    with pytest.raises(SessionUpdateError, match="'n'"):
        await repository.save(
            loaded, Changes(updates={"n": (Update(lambda n: n + 1),)}), StoredState(), TTL
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


GRACE = timedelta(seconds=30)


async def rotated(
    store: RecordStore, clock: Clock, state: dict[str, Any] | None = None
) -> tuple[Repository, str, Loaded, str, Loaded]:
    """A session (bound to ``ada``) rotated once: the repository, the old key and its record as
    loaded before the rotation, the new key and record."""
    repository = Repository(store, clock=clock, rotation_grace=GRACE)
    key, _ = await repository.create(state or {"a": 1}, StoredState(user="ada"), TTL)
    loaded = await repository.load(key, TTL)
    assert isinstance(loaded, Loaded)
    renewed = await repository.renew(loaded, Changes(), StoredState(), TTL, rotating=key)
    assert isinstance(renewed, tuple)
    return repository, key, loaded, renewed[0], renewed[1]


async def test_a_rotated_key_follows_its_successor_within_the_grace_only(
    server_store: RecordStore,
) -> None:
    clock = Clock()
    repository, old, _, new, record = await rotated(server_store, clock)
    assert record.state.issued == clock.now, "the new key's age starts now"
    followed = await repository.load(old, TTL)
    assert isinstance(followed, Followed)
    assert followed.key == new and followed.id == record.id and followed.state == {"a": 1}
    clock.now += GRACE.total_seconds()
    assert await repository.load(old, TTL) is RENEWED
    assert Repository(server_store, clock=clock).rotation_grace == 0
    clock.now -= 1
    assert await Repository(server_store, clock=clock).load(old, TTL) is RENEWED, (
        "a repository without a grace follows no rotation"
    )


async def test_a_write_that_loaded_before_a_rotation_lands_in_its_successor(
    server_store: RecordStore,
) -> None:
    """Unlike a login renewal's tombstone, a rotation's takes the late write into the
    successor within the grace; after it, the write stores nothing."""
    clock = Clock()
    repository, _, early, new, _ = await rotated(server_store, clock)
    saved = await repository.save(early, Changes(set={"b": 2}), StoredState(), TTL)
    assert isinstance(saved, Loaded) and saved.id == repository.id_of(new)
    fresh = await repository.load(new, TTL)
    assert isinstance(fresh, Loaded) and fresh.state == {"a": 1, "b": 2}
    assert fresh.state.user == "ada" and fresh.state.issued == clock.now, "its key age stays"
    clock.now += GRACE.total_seconds()
    late = await repository.save(early, Changes(set={"c": 3}), StoredState(), TTL)
    assert late is RENEWED
    fresh = await repository.load(new, TTL)
    assert isinstance(fresh, Loaded) and "c" not in fresh.state


async def test_two_rotations_of_one_key_leave_one_successor(server_store: RecordStore) -> None:
    clock = Clock()
    repository = Repository(server_store, clock=clock, rotation_grace=GRACE)
    key, _ = await repository.create({"a": 1}, StoredState(user="ada"), TTL)
    first, second = await repository.load(key, TTL), await repository.load(key, TTL)
    assert isinstance(first, Loaded) and isinstance(second, Loaded)
    won = await repository.renew(first, Changes(), StoredState(), TTL, rotating=key)
    lost = await repository.renew(second, Changes(), StoredState(), TTL, rotating=key)
    assert isinstance(won, tuple) and lost is RENEWED
    followed = await repository.load(key, TTL)
    assert isinstance(followed, Followed) and followed.key == won[0]
    if repository.index is not None:
        sessions = await repository.sessions_for("ada")
        assert [s.id for s in sessions] == [won[1].id]


async def test_a_purge_catches_a_rotation_either_way(server_store: RecordStore) -> None:
    clock = Clock()
    repository, old, early, new, _ = await rotated(server_store, clock)
    await repository.purge(early)  # loaded the old key before the rotation: both end
    assert await repository.load(new, TTL) is ENDED
    assert await repository.load(old, TTL) is ENDED
    repository = Repository(server_store, clock=clock, rotation_grace=GRACE)
    key, _ = await repository.create({"a": 1}, StoredState(), TTL)
    loaded = await repository.load(key, TTL)
    assert isinstance(loaded, Loaded)
    await repository.purge(loaded)
    assert await repository.renew(loaded, Changes(), StoredState(), TTL, rotating=key) is None


async def test_a_rotation_tombstone_gives_a_dump_no_key(server_store: RecordStore) -> None:
    """The tombstone seals the successor's key for holders of the old key: the stored bytes
    hold neither key, and another key recovers nothing."""
    clock = Clock()
    repository, old, _, new, _ = await rotated(server_store, clock)
    if not repository.hash_keys:
        pytest.skip("keys in clear: the successor's id is its key")
    record = await server_store.get(repository.id_of(old))
    assert record is not None and read_rotation(record.data) is not None
    assert new.encode() not in record.data and old.encode() not in record.data
    rotation = read_rotation(record.data)
    assert rotation is not None
    successor = repository.id_of(new)
    assert repository._successor_key(old, successor, rotation[1]) == new
    other = generate_session_key()
    assert repository._successor_key(other, successor, rotation[1]) is None


class Meddling:
    """A record store with a user index and batches that wraps another and, once, right after
    the first ``get_many`` has read the records, runs ``meddle()`` (a concurrent request's
    write or renewal, through the real store) before answering."""

    def __init__(self, inner: Any, meddle: Any) -> None:
        self.inner, self.meddle = inner, meddle
        self.hash_keys = inner.hash_keys

    async def get_many(self, ids: Any) -> list[Record | None]:
        records = [await self.inner.get(id) for id in ids]
        meddle, self.meddle = self.meddle, None
        if meddle is not None:
            await meddle()
        return records

    async def replace_many(self, writes: Any) -> list[Version | None]:
        return [await self.inner.put(*w[:3], expect=w.expect) for w in writes]

    async def get(self, id: str) -> Record | None:
        return await self.inner.get(id)

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        return await self.inner.put(id, data, ttl, expect=expect)

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return await self.inner.touch(id, ttl)

    async def delete(self, id: str) -> None:
        await self.inner.delete(id)

    async def index_add(self, user: str, id: str, ttl: timedelta) -> None:
        await self.inner.index_add(user, id, ttl)

    async def index_remove(self, user: str, id: str) -> None:
        await self.inner.index_remove(user, id)

    async def index_members(self, user: str) -> list[str]:
        return list(await self.inner.index_members(user))


@pytest.mark.parametrize("meddle", ["write", "renew"])
async def test_ending_all_catches_a_write_or_renewal_between_its_read_and_its_burial(
    server_store: RecordStore, meddle: str
) -> None:
    if not isinstance(server_store, UserIndex):
        pytest.skip(f"{type(server_store).__name__} has no per-user index")
    plain = Repository(server_store)
    keys = [(await plain.create({"n": i}, StoredState(user="ada"), TTL))[0] for i in range(3)]
    successor: list[Any] = []

    async def concurrently() -> None:
        loaded = await plain.load(keys[1], TTL)
        assert isinstance(loaded, Loaded)
        if meddle == "write":
            assert isinstance(
                await plain.save(loaded, Changes(set={"x": 1}), loaded.state, TTL), Loaded
            )
        else:
            successor.append(await plain.renew(loaded, Changes(), loaded.state, TTL))

    repository = Repository(Meddling(server_store, concurrently))  # type: ignore[arg-type]
    assert await repository.end_all_for("ada") == 3
    for key in keys:  # the renewed key still names its successor: it opens nothing
        assert await plain.load(key, TTL) is (RENEWED if successor and key == keys[1] else ENDED)
    if successor:  # the renewal's new session is ended too: its old key's record named it
        new_key, _ = successor[0]
        assert await plain.load(new_key, TTL) is ENDED
    assert await plain.sessions_for("ada") == []


async def test_only_binding_a_user_applies_the_cap() -> None:
    """A refresh or a write of a session already bound never ends another: only a binding
    (create, save or renew to a new user) counts the user's sessions."""
    from sessionware.stores import MemorySessionStore

    repository = Repository(MemorySessionStore())
    first, _ = await repository.create({}, StoredState(user="ada"), TTL)
    await repository.create({}, StoredState(user="ada"), TTL)
    repository.max_per_user = 1  # two sessions already: over the cap
    loaded = await repository.load(first, TTL)
    assert isinstance(loaded, Loaded)
    refreshed = await repository.refresh(loaded, TTL)
    assert isinstance(refreshed, Loaded)
    saved = await repository.save(refreshed, Changes(set={"n": 1}), refreshed.state, TTL)
    assert isinstance(saved, Loaded)
    assert len(await repository.sessions_for("ada")) == 2
    await repository.create({}, StoredState(user="ada"), TTL)  # a binding: one stays
    assert len(await repository.sessions_for("ada")) == 1


class Counting:
    """A record store that wraps another and counts its puts, and those it refused; each put
    yields to the event loop first, as one over the network does."""

    def __init__(self, inner: RecordStore) -> None:
        self.inner, self.hash_keys = inner, inner.hash_keys
        self.puts = self.refused = 0

    async def get(self, id: str) -> Record | None:
        return await self.inner.get(id)

    async def put(
        self, id: str, data: bytes, ttl: timedelta, *, expect: Version | Absent
    ) -> Version | None:
        self.puts += 1
        await asyncio.sleep(0)  # a round trip: the memory store's puts would never overlap
        version = await self.inner.put(id, data, ttl, expect=expect)
        self.refused += version is None
        return version

    async def touch(self, id: str, ttl: timedelta) -> bool:
        return await self.inner.touch(id, ttl)

    async def delete(self, id: str) -> None:
        await self.inner.delete(id)


WRITERS = 16


async def _stale_loads(repository: Repository, key: str, count: int) -> list[Loaded]:
    """``count`` loads of one session, all before any of them writes (as requests in flight)."""
    loads = [await repository.load(key, TTL) for _ in range(count)]
    assert all(isinstance(loaded, Loaded) for loaded in loads)
    return loads  # type: ignore[return-value]


async def test_one_process_writes_of_one_session_take_turns(server_store: RecordStore) -> None:
    """Issue 30 item 2: a process's concurrent writes of one session commit one after another,
    each on the record the previous one stored: one put each, none refused, nothing lost."""
    store = Counting(server_store)
    repository = Repository(store)
    key, _ = await repository.create({"n": 0}, StoredState(), TTL)
    loads = await _stale_loads(repository, key, WRITERS)
    store.puts = 0

    async def write(i: int, loaded: Loaded) -> Loaded | None:
        changes = Changes(set={f"k{i}": i}, updates={"n": (Update(lambda n: n + 1, 1),)})
        return await repository.save(loaded, changes, StoredState(), TTL)

    saved = await asyncio.gather(*(write(i, loaded) for i, loaded in enumerate(loads)))
    assert all(isinstance(s, Loaded) for s in saved)
    assert (store.puts, store.refused) == (WRITERS, 0)
    assert repository.turns.table == {}
    final = await repository.load(key, TTL)
    assert isinstance(final, Loaded)
    assert final.state == {"n": WRITERS, **{f"k{i}": i for i in range(WRITERS)}}


async def test_writes_of_two_processes_still_merge(server_store: RecordStore) -> None:
    """Turns are per process (per repository): another process's write is a lost race,
    re-read and merged, as before."""
    one, other = Repository(server_store), Repository(server_store)
    key, _ = await one.create({"n": 0}, StoredState(), TTL)
    loads = await _stale_loads(one, key, 4) + await _stale_loads(other, key, 4)
    increment = Changes(updates={"n": (Update(lambda n: n + 1, 1),)})
    saved = await asyncio.gather(
        *(
            (one if i < 4 else other).save(loaded, increment, StoredState(), TTL)
            for i, loaded in enumerate(loads)
        )
    )
    assert all(isinstance(s, Loaded) for s in saved)
    final = await one.load(key, TTL)
    assert isinstance(final, Loaded) and final.state == {"n": 8}
    assert one.turns.table == {} and other.turns.table == {}


async def test_a_renewal_among_concurrent_writes_takes_its_turn(server_store: RecordStore) -> None:
    """A renewal waits for the old record's turn and holds it while it swaps: no deadlock,
    writes before it are carried into the new session, writes after it store nothing."""
    repository = Repository(server_store)
    key, _ = await repository.create({"n": 0}, StoredState(), TTL)
    *loads, login = await _stale_loads(repository, key, WRITERS + 1)
    increment = Changes(updates={"n": (Update(lambda n: n + 1, 1),)})
    writes = [repository.save(loaded, increment, StoredState(), TTL) for loaded in loads]
    renewal = repository.renew(login, Changes(user="ada"), StoredState(), TTL)
    done = await asyncio.wait_for(
        asyncio.gather(*writes[: WRITERS // 2], renewal, *writes[WRITERS // 2 :]), timeout=30
    )
    renewed = done[WRITERS // 2]
    saved = done[: WRITERS // 2] + done[WRITERS // 2 + 1 :]
    assert isinstance(renewed, tuple)
    assert all(isinstance(s, Loaded) or s is RENEWED for s in saved)
    carried = sum(isinstance(s, Loaded) for s in saved)
    new = await repository.load(renewed[0], TTL)
    assert isinstance(new, Loaded) and new.state == {"n": carried} and new.state.user == "ada"
    assert await repository.load(key, TTL) is RENEWED
    assert repository.turns.table == {}


async def test_an_admin_call_during_concurrent_writes_ends_the_session(
    server_store: RecordStore,
) -> None:
    """Ending a session takes no turn: it neither waits for writes nor blocks them."""
    repository = Repository(server_store)
    key, _ = await repository.create({"n": 0}, StoredState(), TTL)
    loads = await _stale_loads(repository, key, WRITERS)
    increment = Changes(updates={"n": (Update(lambda n: n + 1, 1),)})
    writes = [repository.save(loaded, increment, StoredState(), TTL) for loaded in loads]
    ending = repository.end(repository.id_of(key))
    done = await asyncio.wait_for(asyncio.gather(ending, *writes), timeout=30)
    assert done[0] is True
    assert all(isinstance(s, Loaded) or s is None for s in done[1:])
    assert await repository.load(key, TTL) is ENDED
    assert repository.turns.table == {}


async def test_a_write_cancelled_while_waiting_leaves_no_turn_behind() -> None:
    repository = Repository(MemorySessionStore())
    key, _ = await repository.create({"n": 0}, StoredState(), TTL)
    loaded, waiting = await _stale_loads(repository, key, 2)
    turn = await repository.turns.take(loaded.id)
    task = asyncio.ensure_future(
        repository.save(waiting, Changes(set={"a": 1}), StoredState(), TTL)
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    repository.turns.give_back(turn)
    assert repository.turns.table == {}


def test_turns_belong_to_one_event_loop() -> None:
    """A repository used from two event loops: a write in one never waits on (or touches) the
    lock of a write in the other."""
    repository = Repository(MemorySessionStore())
    key, _ = asyncio.run(repository.create({"n": 0}, StoredState(), TTL))
    held = threading.Event()
    release = threading.Event()

    async def hold_a_turn() -> None:
        loaded = await repository.load(key, TTL)
        assert isinstance(loaded, Loaded)
        turn = await repository.turns.take(loaded.id)
        held.set()
        await asyncio.to_thread(release.wait, 10)
        repository.turns.give_back(turn)

    async def write() -> Loaded | None:
        loaded = await repository.load(key, TTL)
        assert isinstance(loaded, Loaded)
        return await repository.save(loaded, Changes(set={"a": 1}), StoredState(), TTL)

    holder = threading.Thread(target=asyncio.run, args=(hold_a_turn(),))
    holder.start()
    try:
        assert held.wait(10)
        saved = asyncio.run(asyncio.wait_for(write(), timeout=5))
        assert isinstance(saved, Loaded) and saved.state["a"] == 1
    finally:
        release.set()
        holder.join(10)
    assert repository.turns.table == {}
