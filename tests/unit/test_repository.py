"""The repository's rules, over every record store: renewal under faults, late writes after a
login, read-modify-write updates. (The shipped contract suite covers the rest.)"""

from __future__ import annotations

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
from sessionware.stores.base import (
    Absent,
    Record,
    RecordStore,
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
