"""touch_after: under ON_EVERY_REQUEST a burst of requests extends the session once, and the
idle timeout still holds (a session expires at most its TTL after its last use)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sessionware import BrowserSession, Key, PersistentSession, SessionMiddleware
from sessionware import TtlExtensionPolicy as Policy
from sessionware.middleware import get_session
from sessionware.stores.cookie import CookieSessionStore
from sessionware.stores.memory import MemorySessionStore
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.client import RecordingStore, Response, request
from tests.factories import redis as redis_factory
from tests.sessions import finish

KEY = Key.generate()
TTL = timedelta(seconds=100)
AFTER = timedelta(seconds=30)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/login`` stores a user; any other path only reads the session."""
    session = get_session(scope)
    if scope["path"] == "/login":
        session["user"] = "ada"
    body = str(session.get("user")).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def middleware(store: Any, clock: Clock, lifecycle: Any = None) -> SessionMiddleware:
    lifecycle = lifecycle or BrowserSession(
        state_ttl=TTL, state_ttl_extension_policy=Policy.ON_EVERY_REQUEST, touch_after=AFTER
    )
    return SessionMiddleware(app, store=store, key=KEY, lifecycle=lifecycle, clock=clock)


class Browser:
    """Keeps the latest session cookie, as a browser does."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi
        self.cookie: str | None = None
        self.set_cookies = 0

    async def get(self, path: str = "/") -> Response:
        cookies = {"id": self.cookie} if self.cookie else None
        response = await request(self.asgi, "GET", path, cookies=cookies)
        sent = response.cookie("id")
        if sent is not None:
            self.set_cookies += 1
            self.cookie = None if sent.is_removal else sent.value
        return response


@asynccontextmanager
async def record_store(kind: str, clock: Clock) -> AsyncIterator[Any]:
    if kind == "memory":
        yield MemorySessionStore()  # its TTL is garbage collection: the middleware's clock rules
        return
    with tempfile.TemporaryDirectory() as folder:
        sqlite = SQLiteSessionStore(Path(folder) / "s.db")
        try:
            yield sqlite
        finally:
            await sqlite.aclose()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_burst_within_touch_after_costs_at_most_one_write(kind: str) -> None:
    clock = Clock()
    async with record_store(kind, clock) as inner:
        store = RecordingStore(inner)
        browser = Browser(middleware(store, clock))
        assert (await browser.get("/login")).text == "ada"
        store.calls.clear()
        for _ in range(100):  # within touch_after of the write: nothing to extend
            clock.now += 0.2
            assert (await browser.get()).text == "ada"
        assert store.writes == []
        clock.now += AFTER.total_seconds()
        for _ in range(100):  # past it: the first request extends, the others see that
            clock.now += 0.2
            assert (await browser.get()).text == "ada"
        assert store.writes == ["put"], store.writes  # one rewrite with the new expiry
        assert store.calls.count("get") == 200


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_idle_timeout_still_holds(kind: str) -> None:
    clock = Clock()
    async with record_store(kind, clock) as inner:
        browser = Browser(middleware(inner, clock))
        await browser.get("/login")
        for _ in range(30):  # in use for 300 s, three times the TTL: it stays alive
            clock.now += 10
            assert (await browser.get()).text == "ada"
        last_use = clock.now
        clock.now = last_use + (TTL - AFTER).total_seconds() - 1
        assert (await browser.get()).text == "ada"  # within TTL - touch_after: still there
        last_use = clock.now
        clock.now = last_use + TTL.total_seconds() + 1  # more than TTL after the last use
        assert (await browser.get()).text == "None"


async def test_without_touch_after_every_request_extends() -> None:
    """Each extension rewrites the record with its new ``expires``: the envelope says when
    the session expires (``touch_after`` is what makes extensions rare)."""
    clock = Clock()
    store = RecordingStore(MemorySessionStore())
    lifecycle = BrowserSession(state_ttl=TTL, state_ttl_extension_policy=Policy.ON_EVERY_REQUEST)
    browser = Browser(middleware(store, clock, lifecycle))
    await browser.get("/login")
    store.calls.clear()
    for _ in range(10):
        await browser.get()
    assert store.writes == ["put"] * 10


async def test_the_cookie_store_reseals_at_most_once_per_touch_after() -> None:
    clock = Clock()
    browser = Browser(middleware(CookieSessionStore(), clock))
    await browser.get("/login")
    assert browser.set_cookies == 1
    for _ in range(100):
        clock.now += 0.2
        await browser.get()
    assert browser.set_cookies == 1
    clock.now += AFTER.total_seconds()
    for _ in range(100):
        clock.now += 0.2
        assert (await browser.get()).text == "ada"
    assert browser.set_cookies == 2
    last_use = clock.now
    clock.now = last_use + TTL.total_seconds() + 1
    assert (await browser.get()).text == "None"  # the sealed expiry passed: idle timeout


async def test_a_persistent_cookie_is_resent_only_when_extended() -> None:
    clock = Clock()
    lifecycle = PersistentSession(
        session_ttl=TTL, ttl_extension_policy=Policy.ON_EVERY_REQUEST, touch_after=AFTER
    )
    browser = Browser(middleware(MemorySessionStore(), clock, lifecycle))
    await browser.get("/login")
    for _ in range(50):
        clock.now += 0.2
        await browser.get()
    assert browser.set_cookies == 1  # its Max-Age still runs from the last extension
    clock.now += AFTER.total_seconds()
    response = await browser.get()
    cookie = response.cookie("id")
    assert cookie is not None and cookie.max_age == int(TTL.total_seconds())


async def test_a_session_ended_elsewhere_is_noticed_at_the_extension() -> None:
    clock = Clock()
    store = MemorySessionStore()
    browser = Browser(middleware(store, clock))
    await browser.get("/login")
    clock.now += AFTER.total_seconds() + 1
    # Another request purges it between this request's load and its extension.
    engine: Any = browser.asgi.engine
    tracker = engine.begin([f"id={browser.cookie}".encode()])
    await engine.load(tracker)
    assert tracker.record is not None and tracker.session.get("user") == "ada"
    await engine.repository.purge(tracker.record)
    headers = await finish(engine, tracker)
    assert any(name == b"set-cookie" and b"Max-Age=0" in value for name, value in headers)


def test_touch_after_is_checked_at_construction() -> None:
    every = Policy.ON_EVERY_REQUEST
    with pytest.raises(ValueError, match="shorter than state_ttl"):
        BrowserSession(state_ttl=TTL, state_ttl_extension_policy=every, touch_after=TTL)
    with pytest.raises(ValueError, match="shorter than session_ttl"):
        PersistentSession(session_ttl=TTL, ttl_extension_policy=every, touch_after=TTL * 2)
    with pytest.raises(ValueError, match="at least one second"):
        BrowserSession(state_ttl_extension_policy=every, touch_after=timedelta(0))
    with pytest.raises(ValueError, match="at least one second"):
        BrowserSession(state_ttl_extension_policy=every, touch_after=timedelta(milliseconds=500))
    with pytest.raises(TypeError, match="timedelta"):
        BrowserSession(state_ttl_extension_policy=every, touch_after=30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ON_EVERY_REQUEST"):
        BrowserSession(state_ttl=TTL, touch_after=AFTER)


async def _monitor(
    client: Redis, prefix: str, sentinel: str, seen: list[str], ready: asyncio.Event
) -> None:
    async with client.monitor() as monitor:
        ready.set()
        async for command in monitor.listen():
            text = str(command.get("command", ""))
            if sentinel in text:
                return
            if prefix in text and command.get("client_type") != "lua":  # not a script's own
                seen.append(text)


async def test_redis_command_counts() -> None:
    """On real Redis, seen with MONITOR: 100 requests past touch_after cost one write."""
    clock = Clock()
    async with redis_factory.store() as store:
        browser = Browser(middleware(store, clock))
        await browser.get("/login")
        client = Redis.from_url(redis_factory.URL)
        sentinel = f"sessionware-test-end-{uuid.uuid4().hex}"
        seen: list[str] = []
        ready = asyncio.Event()
        task = asyncio.create_task(_monitor(client, store.key_prefix, sentinel, seen, ready))
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await asyncio.sleep(0.1)
            for _ in range(100):
                clock.now += 0.2
                assert (await browser.get()).text == "ada"
            clock.now += AFTER.total_seconds()
            for _ in range(100):
                clock.now += 0.2
                assert (await browser.get()).text == "ada"
            await client.echo(sentinel)
            await asyncio.wait_for(task, 10)
        finally:
            task.cancel()
            await client.aclose()
        commands = [c.split(" ", 1)[0].strip('"').upper() for c in seen]
        assert commands.count("GET") == 200
        writes = [c for c in commands if c != "GET"]
        assert writes == ["EVAL"], writes  # one compare-and-set rewrite, no EXPIRE


async def test_a_record_without_an_expiry_is_extended_once_then_debounced() -> None:
    """An actix-written record carries no ``expires``: the first extension writes one."""
    clock = Clock()
    inner = MemorySessionStore()
    store = RecordingStore(inner)
    browser = Browser(middleware(store, clock))
    await browser.get("/login")
    engine: Any = browser.asgi.engine
    tracker = engine.begin([f"id={browser.cookie}".encode()])
    await engine.load(tracker)
    loaded = tracker.record
    await inner.put(loaded.id, b'{"v":1,"state":{"user":"ada"}}', TTL, expect=loaded.version)
    store.calls.clear()
    for _ in range(50):
        clock.now += 0.2
        assert (await browser.get()).text == "ada"
    assert store.writes == ["put"]
