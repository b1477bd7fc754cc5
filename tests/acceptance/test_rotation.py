"""Automatic rotation (issue 25 item 3), over the memory, Redis and PostgreSQL stores, with the
injected clock: a key older than ``rotate_every`` is replaced at its next use (state and user
kept); for ``rotation_grace`` the old key still leads to the successor, then opens nothing; two
rotations at once leave one successor; a purge or sign-out racing a rotation revives nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest

from sessionware import (
    ContentSecurity,
    Key,
    NotSupportedError,
    SessionEvent,
    SessionMiddleware,
    SessionRotated,
)
from sessionware.crypto import unseal
from sessionware.stores import CookieSessionStore, MemorySessionStore
from tests.client import Gate, RecordingStore, Response, request
from tests.conftest import FACTORIES

STORES = [name for name in ("memory", "redis", "postgres", "mysql") if name in FACTORIES]
EVERY = timedelta(minutes=15)
GRACE = timedelta(seconds=30)
USER = "ada"
REMEMBER = timedelta(days=30)


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RecordingStore]:
    async with FACTORIES[request.param].store() as inner:
        yield RecordingStore(inner)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def app(scope: Any, receive: Any, send: Any) -> None:
    """``/set`` stores the JSON body's items, ``/bind`` binds ``USER``, ``/purge`` purges,
    ``/remember`` sets a lifetime of ``REMEMBER`` and files the session under an index; every
    response is the state as JSON."""
    session = scope["session"]
    body = (await receive()).get("body", b"")
    if scope["path"] == "/set":
        session.update(json.loads(body))
    elif scope["path"] == "/bind":
        session.bind_user(USER)
    elif scope["path"] == "/purge":
        session.purge()
    elif scope["path"] == "/remember":
        session.set_expiry(REMEMBER)
        session.index("oidc_sid", "s1")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(dict(session)).encode()})


def middleware(store: Any, clock: Clock, events: list[SessionEvent]) -> SessionMiddleware:
    return SessionMiddleware(
        app,
        store=store,
        key=KEY,
        clock=clock,
        on_event=events.append,
        rotate_every=EVERY,
        rotation_grace=GRACE,
    )


KEY = Key.generate()


def key_of(response: Response) -> str:
    """The sealed value of the session cookie the response sets."""
    cookie = response.cookie()
    assert cookie is not None and not cookie.is_removal, response.set_cookies
    return cookie.value


def plain(sealed: str) -> str:
    """The session key a sealed cookie value carries (each sealing differs: a new nonce)."""
    opened = unseal(ContentSecurity.PRIVATE, [KEY], "id", unquote(sealed))
    assert opened is not None
    return opened[0]


async def started(asgi: SessionMiddleware) -> str:
    """A session bound to ``USER`` holding ``{"a": 1}``; its cookie value."""
    key = key_of(await request(asgi, "POST", "/set", json={"a": 1}))
    r = await request(asgi, "POST", "/bind", cookies={"id": key})
    assert r.status == 200
    return key


async def test_a_key_older_than_rotate_every_is_replaced_at_its_next_use(
    store: RecordingStore,
) -> None:
    clock, events = Clock(), []
    asgi = middleware(store, clock, events)
    old = await started(asgi)
    clock.now += EVERY.total_seconds() - 1
    early = await request(asgi, "GET", "/", cookies={"id": old})
    assert early.json() == {"a": 1} and early.set_cookies == [], "not due yet: nothing moves"
    clock.now += 1
    r = await request(asgi, "GET", "/", cookies={"id": old})
    new = key_of(r)
    assert plain(new) != plain(old) and r.json() == {"a": 1}
    assert [e for e in events if isinstance(e, SessionRotated)] == [SessionRotated()]
    sessions = await asgi.admin.sessions_for(USER)
    assert len(sessions) == 1, "the user is still signed in, once"
    again = await request(asgi, "GET", "/", cookies={"id": new})
    assert again.json() == {"a": 1} and again.set_cookies == [], "the new key is not due"
    clock.now += EVERY.total_seconds()
    again = await request(asgi, "GET", "/", cookies={"id": new})
    assert plain(key_of(again)) not in (plain(old), plain(new))


async def test_a_rotation_keeps_the_sessions_lifetime_and_its_indexes(
    store: RecordingStore,
) -> None:
    """``set_expiry`` and ``index()`` are the session's, not its key's: the rotated session
    lives as long, its cookie says so, and ``sessions_where`` finds it (only it) under the
    rotated key's id."""
    clock, events = Clock(), []
    asgi = middleware(store, clock, events)
    old = await started(asgi)
    remembered = await request(asgi, "POST", "/remember", cookies={"id": old})
    assert remembered.status == 200
    clock.now += EVERY.total_seconds()
    r = await request(asgi, "GET", "/", cookies={"id": old})
    new = key_of(r)
    assert plain(new) != plain(old) and r.json() == {"a": 1}
    cookie = r.cookie()
    assert cookie is not None and cookie.max_age == REMEMBER.total_seconds()
    repository = asgi.engine.repository  # type: ignore[attr-defined]
    loaded = await repository.load(plain(new), timedelta(hours=1))
    assert loaded.state.lifetime == REMEMBER.total_seconds()
    assert loaded.state.indexes == {"oidc_sid": "s1"}
    assert loaded.state.expires == clock.now + REMEMBER.total_seconds()
    found = await asgi.admin.sessions_where("oidc_sid", "s1")
    assert [info.id for info in found] == [repository.public_id(repository.id_of(plain(new)))]
    clock.now += GRACE.total_seconds()
    assert (await request(asgi, "GET", "/", cookies={"id": old})).json() == {}
    found = await asgi.admin.sessions_where("oidc_sid", "s1")
    assert [info.id for info in found] == [repository.public_id(repository.id_of(plain(new)))]


async def test_within_the_grace_the_old_key_follows_then_opens_nothing(
    store: RecordingStore,
) -> None:
    """A parallel request of the same browser still carries the old key: within the grace it
    works on the successor (its write lands there) and is sent the successor's key; after the
    grace the old key opens an empty session and sends no cookie."""
    clock, events = Clock(), []
    asgi = middleware(store, clock, events)
    old = await started(asgi)
    clock.now += EVERY.total_seconds()
    new = key_of(await request(asgi, "GET", "/", cookies={"id": old}))
    clock.now += GRACE.total_seconds() - 1
    read = await request(asgi, "GET", "/", cookies={"id": old})
    assert read.json() == {"a": 1} and plain(key_of(read)) == plain(new)
    write = await request(asgi, "POST", "/set", cookies={"id": old}, json={"b": 2})
    assert write.status == 200 and plain(key_of(write)) == plain(new)
    assert (await request(asgi, "GET", "/", cookies={"id": new})).json() == {"a": 1, "b": 2}
    clock.now += 1
    late = await request(asgi, "GET", "/", cookies={"id": old})
    assert late.json() == {} and late.set_cookies == []
    refused = await request(asgi, "POST", "/set", cookies={"id": old}, json={"c": 3})
    assert refused.status == 409 and refused.set_cookies == []
    assert (await request(asgi, "GET", "/", cookies={"id": new})).json() == {"a": 1, "b": 2}
    assert len([e for e in events if isinstance(e, SessionRotated)]) == 1


async def test_a_write_that_loaded_before_the_rotation_lands_in_the_successor(
    store: RecordingStore,
) -> None:
    """Unlike a login renewal's, a rotation's successor takes a write that loaded the old key
    and commits after the rotation (within the grace); its response sends no old key."""
    clock, events = Clock(), []
    asgi = middleware(store, clock, events)
    old = await started(asgi)
    writer_app = middleware(store, clock, events)
    store.hook = gate = Gate("put")
    writer = asyncio.create_task(
        request(writer_app, "POST", "/set", cookies={"id": old}, json={"b": 2})
    )
    await asyncio.wait_for(gate.arrived.wait(), 30)
    store.hook = None
    clock.now += EVERY.total_seconds()
    new = key_of(await request(asgi, "GET", "/", cookies={"id": old}))
    gate.release.set()
    written = await writer
    assert written.status == 200
    assert all(plain(c.value) != plain(old) and not c.is_removal for c in written.set_cookies)
    assert (await request(asgi, "GET", "/", cookies={"id": new})).json() == {"a": 1, "b": 2}


async def test_two_rotations_at_once_leave_one_successor(store: RecordingStore) -> None:
    clock, events = Clock(), []
    asgi = middleware(store, clock, events)
    old = await started(asgi)
    clock.now += EVERY.total_seconds()
    store.hook = gate = Gate("put")  # the first rotation parks before its new record lands
    first = asyncio.create_task(request(asgi, "GET", "/", cookies={"id": old}))
    await asyncio.wait_for(gate.arrived.wait(), 30)
    store.hook = None
    second = await request(asgi, "POST", "/set", cookies={"id": old}, json={"b": 2})
    gate.release.set()
    lost = await first
    winner = key_of(second)
    assert lost.status == 200 and plain(key_of(lost)) == plain(winner), "the winner's key"
    sessions = await asgi.admin.sessions_for(USER)
    assert len(sessions) == 1, "one successor"
    assert (await request(asgi, "GET", "/", cookies={"id": winner})).json() == {"a": 1, "b": 2}
    assert len([e for e in events if isinstance(e, SessionRotated)]) == 1


@pytest.mark.parametrize("ending", ["purge", "signout"])
async def test_an_ending_racing_a_rotation_revives_nothing(
    store: RecordingStore, ending: str
) -> None:
    """The rotation has stored its new record and not yet swapped the old one when the
    session is purged (or its user signed out everywhere): no key opens it afterwards."""
    clock, events = Clock(), []
    asgi = middleware(store, clock, events)
    old = await started(asgi)
    clock.now += EVERY.total_seconds()
    store.hook = gate = Gate("put", 2)  # after the new record, before the old one's tombstone
    rotation = asyncio.create_task(request(asgi, "GET", "/", cookies={"id": old}))
    await asyncio.wait_for(gate.arrived.wait(), 30)
    store.hook = None
    if ending == "purge":
        assert (await request(asgi, "POST", "/purge", cookies={"id": old})).status == 200
    else:
        await asgi.admin.end_all_for(USER)
    gate.release.set()
    rotated = await rotation
    keys = [c.value for c in rotated.set_cookies if not c.is_removal]
    for key in [old, *keys]:
        assert (await request(asgi, "GET", "/", cookies={"id": key})).json() == {}
    assert await asgi.admin.sessions_for(USER) == []


async def test_a_purge_after_a_rotation_with_the_old_key_ends_the_successor(
    store: RecordingStore,
) -> None:
    clock, events = Clock(), []
    asgi = middleware(store, clock, events)
    old = await started(asgi)
    clock.now += EVERY.total_seconds()
    new = key_of(await request(asgi, "GET", "/", cookies={"id": old}))
    purged = await request(asgi, "POST", "/purge", cookies={"id": old})
    assert purged.cookie() is not None and purged.cookie().is_removal  # type: ignore[union-attr]
    assert (await request(asgi, "GET", "/", cookies={"id": new})).json() == {}


def test_rotate_every_is_checked_at_construction() -> None:
    for bad in (timedelta(0), timedelta(seconds=-1)):
        with pytest.raises(ValueError, match="rotate_every"):
            SessionMiddleware(app, store=MemorySessionStore(), key=KEY, rotate_every=bad)
    with pytest.raises(ValueError, match="rotation_grace"):
        SessionMiddleware(
            app,
            store=MemorySessionStore(),
            key=KEY,
            rotate_every=EVERY,
            rotation_grace=timedelta(seconds=-1),
        )


def test_the_cookie_store_does_not_rotate() -> None:
    """A sealed cookie has no record a rotation could retire: it would keep opening."""
    with pytest.raises(NotSupportedError, match="server-side store"):
        SessionMiddleware(app, store=CookieSessionStore(), key=KEY, rotate_every=EVERY)
