"""on_event: which events each request path emits (memory and cookie stores, a dead Redis), and
that nothing is built or called when it is unset."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

import sessionware.engine
import sessionware.events
import sessionware.repository
from sessionware import BrowserSession, Key, SessionMiddleware
from sessionware.engine import PersistError
from sessionware.events import (
    ConflictEnded,
    DecodeFailed,
    MergeRetry,
    SessionCreated,
    SessionEvent,
    SessionExpired,
    SessionLoaded,
    SessionPurged,
    SessionRenewed,
    SessionRevoked,
    SessionSuperseded,
    StoreFailed,
)
from sessionware.middleware import get_session
from sessionware.stores.cookie import CookieSessionStore
from sessionware.stores.memory import MemorySessionStore
from sessionware.stores.redis import RedisSessionStore
from tests.client import request
from tests.services import free_port
from tests.sessions import finish

KEY = Key.generate()
TTL = timedelta(seconds=100)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/login`` writes, ``/renew`` renews, ``/logout`` purges, others only read."""
    session = get_session(scope)
    path = scope["path"]
    if path == "/login":
        session["user"] = "ada"
    elif path == "/renew":
        session.renew()
    elif path == "/logout":
        session.purge()
    body = str(session.get("user")).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class Events(list[SessionEvent]):
    """An ``on_event`` hook that keeps what it got."""

    def __call__(self, event: SessionEvent) -> None:
        self.append(event)

    def take(self) -> list[SessionEvent]:
        got = list(self)
        self.clear()
        return got


def make(store: Any, events: Any, clock: Clock, **lifecycle: Any) -> SessionMiddleware:
    return SessionMiddleware(
        app,
        store=store,
        key=KEY,
        clock=clock,
        on_event=events,
        lifecycle=BrowserSession(state_ttl=TTL, **lifecycle),
    )


async def get(asgi: Any, path: str, cookie: str | None = None) -> tuple[str, str | None]:
    response = await request(asgi, "GET", path, cookies={"id": cookie} if cookie else None)
    sent = response.cookie("id")
    return response.text, (sent.value if sent is not None else cookie)


@pytest.mark.parametrize("kind", ["memory", "cookie"])
async def test_a_session_life_in_events(kind: str) -> None:
    clock, events = Clock(), Events()
    store: Any = MemorySessionStore() if kind == "memory" else CookieSessionStore()
    asgi = make(store, events, clock, max_age=timedelta(seconds=1000))
    _, cookie = await get(asgi, "/login")
    assert events.take() == [SessionCreated()]
    assert (await get(asgi, "/", cookie))[0] == "ada"
    assert events.take() == [SessionLoaded()]
    _, cookie = await get(asgi, "/renew", cookie)
    assert events.take() == [SessionLoaded(), SessionRenewed()]
    await get(asgi, "/logout", cookie)
    assert events.take() == [SessionLoaded(), SessionPurged()]

    await get(asgi, "/", "not-a-sealed-cookie")
    assert events.take() == [DecodeFailed("cookie")]

    _, cookie = await get(asgi, "/login")
    clock.now += TTL.total_seconds() + 1
    assert (await get(asgi, "/", cookie))[0] == "None"
    assert events.take() == [SessionCreated(), SessionExpired("idle")]

    for _ in range(11):  # kept alive by writes, until max_age since its creation passes
        _, cookie = await get(asgi, "/login", cookie)
        clock.now += 99
    assert (await get(asgi, "/", cookie))[0] == "None"
    assert events.take()[-1] == SessionExpired("absolute")


async def test_unreadable_state_is_decode_failed() -> None:
    clock, events = Clock(), Events()
    store = MemorySessionStore()
    asgi = make(store, events, clock)
    _, cookie = await get(asgi, "/login")
    engine: Any = asgi.engine
    tracker = engine.begin([f"id={cookie}".encode()])
    await engine.load(tracker)
    loaded = tracker.record
    await store.put(loaded.id, b"{not json", TTL, expect=loaded.version)
    events.clear()
    assert (await get(asgi, "/", cookie))[0] == "None"
    assert events.take() == [DecodeFailed("state")]


async def two_requests(asgi: Any, cookie: str) -> tuple[Any, Any]:
    engine = asgi.engine
    first, second = (engine.begin([f"id={cookie}".encode()]) for _ in range(2))
    await engine.load(first)
    await engine.load(second)
    return first, second


async def test_a_lost_race_is_merge_retry_and_an_ended_session_revoked() -> None:
    clock, events = Clock(), Events()
    asgi = make(MemorySessionStore(), events, clock)
    _, cookie = await get(asgi, "/login")
    engine: Any = asgi.engine
    first, second = await two_requests(asgi, cookie)
    first.session["a"] = 1
    second.session["b"] = 2
    events.clear()
    await finish(engine, first)
    await finish(engine, second)
    assert events.take() == [MergeRetry("save")]

    first, second = await two_requests(asgi, cookie)
    first.session.purge()
    second.session["c"] = 3
    events.clear()
    await finish(engine, first)
    await finish(engine, second)
    # The save lost its compare-and-set to the purge, read again and found the session ended.
    assert events.take() == [SessionPurged(), SessionRevoked("save")]


async def test_a_write_after_a_login_is_superseded() -> None:
    clock, events = Clock(), Events()
    asgi = make(MemorySessionStore(), events, clock)
    _, cookie = await get(asgi, "/login")
    engine: Any = asgi.engine
    first, second = await two_requests(asgi, cookie)
    first.session.renew()
    second.session["late"] = True
    await finish(engine, first)
    events.clear()
    with pytest.raises(PersistError):
        await finish(engine, second)
    assert events.take() == [SessionSuperseded("save")]


async def test_too_many_renewals_to_follow_is_conflict_ended() -> None:
    clock, events = Clock(), Events()
    asgi = make(MemorySessionStore(), events, clock)
    _, cookie = await get(asgi, "/login")
    engine: Any = asgi.engine
    engine.repository.max_hops = 0
    first, second = await two_requests(asgi, cookie)
    first.session.renew()
    second.session.purge()  # a logout follows the login's renewal, up to max_hops
    await finish(engine, first)
    events.clear()
    with pytest.raises(PersistError) as failed:  # never a logout that leaves the login live
        await finish(engine, second)
    assert failed.value.status_code == 503
    assert events.take() == [ConflictEnded("purge", "hops")]


async def test_a_store_failure_is_store_error_without_key_or_value() -> None:
    events = Events()
    store = RedisSessionStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=1)
    try:
        asgi = make(store, events, Clock())
        sealed = await make(MemorySessionStore(), None, Clock()).engine.seed({"user": "ada"})
        cookie = sealed.split(";", 1)[0].split("=", 1)[1]
        response = await request(asgi, "GET", "/", cookies={"id": cookie})
        assert response.status == 503
    finally:
        await store.aclose()
    assert events.take() == [StoreFailed("get", "RedisSessionStore", "ConnectionError")]


async def test_a_hook_that_raises_does_not_fail_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: SessionEvent) -> None:
        raise RuntimeError("exporter down")

    asgi = make(MemorySessionStore(), broken, Clock())
    with caplog.at_level(logging.ERROR, "sessionware"):
        response = await request(asgi, "GET", "/login")
    assert response.status == 200 and response.cookie("id") is not None
    assert "on_event hook raised on a created event" in caplog.text


def test_on_event_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_event must be a callable"):
        SessionMiddleware(app, store=MemorySessionStore(), key=KEY, on_event="metrics")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["memory", "cookie"])
async def test_unset_no_event_is_built(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``on_event`` unset, building any event fails the test: none is built."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an event was built with on_event unset")

    for name in sessionware.events.__all__:
        cls = getattr(sessionware.events, name)
        if isinstance(cls, type) and issubclass(cls, SessionEvent):
            monkeypatch.setattr(sessionware.events, name, refuse)
            for module in (sessionware.engine, sessionware.repository):
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, refuse)
    clock = Clock()
    store: Any = MemorySessionStore() if kind == "memory" else CookieSessionStore()
    asgi = make(store, None, clock, max_age=timedelta(seconds=150))
    _, cookie = await get(asgi, "/login")
    await get(asgi, "/renew", cookie)  # the old cookie: a tombstone on memory
    _, cookie = await get(asgi, "/renew", cookie)
    await get(asgi, "/", "forged")
    await get(asgi, "/logout", cookie)
    _, cookie = await get(asgi, "/login")
    clock.now += TTL.total_seconds() + 1
    assert (await get(asgi, "/", cookie))[0] == "None"
    if kind == "memory":
        _, cookie = await get(asgi, "/login")
        first, second = await two_requests(asgi, cookie)
        first.session["a"] = 1
        second.session["b"] = 2
        await finish(asgi.engine, first)
        await finish(asgi.engine, second)  # a lost race: merge_retry, unset
