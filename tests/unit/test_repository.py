"""The repository's rules, over every record store: renewal under faults, late writes after a
login, read-modify-write updates. (The shipped contract suite covers the rest.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sessionware import Key, SessionMiddleware, get_session
from sessionware.errors import StoreError
from sessionware.repository import ENDED, RENEWED, Changes, Loaded, Repository, Update
from sessionware.state import TOMBSTONE_HEAD, StoredState
from sessionware.stores.base import Absent, Record, RecordStore, UserIndex, Version
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
