"""A lifetime per session (``set_expiry``) and expiry the app can see (``created_at``,
``expires_at``, ``ended_reason``), over the cookie store and the record stores, on the
middleware's clock (moved by hand: the envelope's times decide, a store's TTL only collects)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs

import pytest

from sessionware import BrowserSession, Key, PersistentSession, SessionMiddleware
from sessionware import TtlExtensionPolicy as Policy
from sessionware.middleware import get_session
from sessionware.stores import CookieSessionStore
from tests.client import RecordingStore, Response, request
from tests.conftest import FACTORIES
from tests.sessions import finish

KEY = Key.generate()
TTL = timedelta(hours=1)
MONTH = timedelta(days=30)
STORES = [
    kind
    for kind in ("cookie", "memory", "sqlite", "redis", "postgres", "mysql")
    if kind in FACTORIES
]
START = 1_800_000_000.0


class Clock:
    """The middleware's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def _iso(moment: datetime | None) -> str | None:
    assert moment is None or moment.tzinfo is timezone.utc
    return None if moment is None else moment.isoformat()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/login`` (``?remember=1``: for 30 days), ``/browser`` (until the browser closes),
    ``/default``, ``/renew``, ``/logout``, ``/write``; every path answers what it sees."""
    session = get_session(scope)
    path, query = scope["path"], parse_qs(scope["query_string"].decode())
    seen = {  # read first: the times and the ending as the request found them
        "created_at": _iso(session.created_at),
        "expires_at": _iso(session.expires_at),
        "ended_reason": session.ended_reason,
        "ended_elsewhere": session.ended_elsewhere,
        "used": session.accessed,
    }
    if path == "/login":
        session.renew()
        session["user"] = "ada"
        if query.get("remember"):
            session.set_expiry(MONTH)
    elif path == "/remember":
        session.set_expiry(MONTH)
    elif path == "/browser":
        session.set_expiry(timedelta(0))
    elif path == "/default":
        session.set_expiry(None)
    elif path == "/renew":
        session.renew()
    elif path == "/logout":
        session.purge()
    elif path == "/write":
        session["n"] = session.get("n", 0) + 1
    body = json.dumps({**seen, "user": session.get("user"), "id": session.id}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class Browser:
    """Keeps the latest session cookie, as a browser does."""

    def __init__(self, asgi: Any) -> None:
        self.asgi = asgi
        self.cookie: str | None = None

    async def get(self, path: str = "/") -> Response:
        cookies = {"id": self.cookie} if self.cookie else None
        response = await request(self.asgi, "GET", path, cookies=cookies)
        sent = response.cookie("id")
        if sent is not None:
            self.cookie = None if sent.is_removal else sent.value
        return response


class TTLs(RecordingStore):
    """A record store that also notes the TTL of every write."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.ttls: list[timedelta] = []

    async def put(self, id: str, data: bytes, ttl: timedelta, *, expect: Any) -> Any:
        self.ttls.append(ttl)
        return await super().put(id, data, ttl, expect=expect)


@asynccontextmanager
async def setup(kind: str, lifecycle: Any = None) -> AsyncIterator[tuple[Browser, Clock, Any]]:
    """A browser on a middleware over store ``kind``, with its clock and the store."""
    clock = Clock()
    async with FACTORIES[kind].store() as inner:
        store = inner if isinstance(inner, CookieSessionStore) else TTLs(inner)
        middleware = SessionMiddleware(
            app,
            store=store,
            key=KEY,
            lifecycle=lifecycle or BrowserSession(state_ttl=TTL),
            clock=clock,
        )
        yield Browser(middleware), clock, store


def record_ttls(store: Any) -> list[timedelta]:
    return store.ttls if isinstance(store, TTLs) else []


@pytest.mark.parametrize("kind", STORES)
async def test_remember_me_gets_its_max_age_and_outlives_the_idle_ttl(kind: str) -> None:
    async with setup(kind) as (browser, clock, store):
        login = await browser.get("/login?remember=1")
        cookie = login.cookie("id")
        assert cookie is not None and cookie.max_age == int(MONTH.total_seconds())
        if isinstance(store, TTLs):  # the record lives as long as the session
            assert store.ttls[-1] == MONTH
        clock.now += 3 * TTL.total_seconds()  # far past the middleware's idle TTL
        seen = (await browser.get()).json()
        assert seen["user"] == "ada" and seen["ended_reason"] is None
        clock.now += MONTH.total_seconds() + 1  # past its own
        seen = (await browser.get()).json()
        assert seen["user"] is None and seen["ended_reason"] == "idle_timeout"


@pytest.mark.parametrize("kind", STORES)
async def test_without_remember_me_the_idle_ttl_holds(kind: str) -> None:
    async with setup(kind) as (browser, clock, _):
        login = await browser.get("/login")
        cookie = login.cookie("id")
        assert cookie is not None and cookie.max_age is None
        clock.now += TTL.total_seconds() + 1
        seen = (await browser.get()).json()
        assert seen["user"] is None and seen["ended_reason"] == "idle_timeout"


@pytest.mark.parametrize("kind", STORES)
async def test_zero_lasts_until_the_browser_closes_and_none_returns(kind: str) -> None:
    day = timedelta(days=1)
    async with setup(kind, PersistentSession(session_ttl=day)) as (browser, clock, store):
        cookie = (await browser.get("/login")).cookie("id")
        assert cookie is not None and cookie.max_age == int(day.total_seconds())
        cookie = (await browser.get("/browser")).cookie("id")
        assert cookie is not None and cookie.max_age is None  # no Max-Age
        assert "max-age" not in cookie.attrs
        assert record_ttls(store)[-1:] in ([], [day])  # the state keeps the middleware's TTL
        cookie = (await browser.get("/write")).cookie("id")
        assert cookie is not None and cookie.max_age is None  # remembered, not one response's
        cookie = (await browser.get("/default")).cookie("id")
        assert cookie is not None and cookie.max_age == int(day.total_seconds())
        cookie = (await browser.get("/remember")).cookie("id")
        assert cookie is not None and cookie.max_age == int(MONTH.total_seconds())
        clock.now += 2 * day.total_seconds()
        assert (await browser.get()).json()["user"] == "ada"
        cookie = (await browser.get("/default")).cookie("id")
        assert cookie is not None and cookie.max_age == int(day.total_seconds())
        clock.now += day.total_seconds() + 1  # back on the middleware's TTL
        assert (await browser.get()).json()["ended_reason"] == "idle_timeout"


@pytest.mark.parametrize("kind", STORES)
async def test_the_lifetime_is_kept_across_renew(kind: str) -> None:
    async with setup(kind) as (browser, clock, store):
        await browser.get("/login?remember=1")
        before = browser.cookie
        clock.now += 60
        cookie = (await browser.get("/renew")).cookie("id")
        assert cookie is not None and cookie.value != before
        assert cookie.max_age == int(MONTH.total_seconds())
        if isinstance(store, TTLs):  # the successor, then the old key's tombstone
            assert store.ttls[-2] == MONTH
        clock.now += 3 * TTL.total_seconds()
        assert (await browser.get()).json()["user"] == "ada"


@pytest.mark.parametrize("kind", STORES)
async def test_the_same_lifetime_again_changes_nothing(kind: str) -> None:
    async with setup(kind) as (browser, clock, store):
        await browser.get("/login?remember=1")
        writes = list(getattr(store, "writes", []))
        clock.now += 60
        response = await browser.get("/remember")
        assert response.cookie("id") is None  # no new cookie, no write
        assert list(getattr(store, "writes", [])) == writes


@pytest.mark.parametrize("kind", STORES)
async def test_created_at_and_expires_at_come_from_the_clock_and_reading_extends_nothing(
    kind: str,
) -> None:
    async with setup(kind) as (browser, clock, store):
        new = (await browser.get()).json()
        assert new["created_at"] is None and new["expires_at"] is None
        assert new["ended_reason"] is None and new["used"] is False
        await browser.get("/login")
        login_at = datetime.fromtimestamp(START, timezone.utc)
        writes = list(getattr(store, "writes", []))
        clock.now += 600
        response = await browser.get()
        seen = response.json()
        assert seen["created_at"] == login_at.isoformat()
        assert seen["expires_at"] == (login_at + TTL).isoformat()
        assert seen["used"] is False  # reading them did not count as a use
        assert response.cookie("id") is None  # nor extend the session
        assert list(getattr(store, "writes", [])) == writes
        clock.now += 600
        seen = (await browser.get()).json()
        assert seen["expires_at"] == (login_at + TTL).isoformat()  # not pushed back
        await browser.get("/write")  # a change extends it: from now
        seen = (await browser.get()).json()
        assert seen["created_at"] == login_at.isoformat()  # creation stays
        assert seen["expires_at"] == (login_at + timedelta(seconds=1200) + TTL).isoformat()


@pytest.mark.parametrize("kind", STORES)
async def test_expires_at_is_the_absolute_timeout_when_that_comes_first(kind: str) -> None:
    lifecycle = BrowserSession(state_ttl=TTL, max_age=timedelta(hours=2))
    async with setup(kind, lifecycle) as (browser, clock, _):
        await browser.get("/login?remember=1")
        seen = (await browser.get()).json()
        login_at = datetime.fromtimestamp(START, timezone.utc)
        assert seen["expires_at"] == (login_at + timedelta(hours=2)).isoformat()
        clock.now += timedelta(hours=2).total_seconds()
        seen = (await browser.get()).json()
        assert seen["user"] is None and seen["ended_reason"] == "absolute_timeout"
        assert seen["ended_elsewhere"] is False


@pytest.mark.parametrize("kind", [kind for kind in STORES if kind != "cookie"])
async def test_a_signed_out_session_says_so(kind: str) -> None:
    async with setup(kind) as (browser, _, _store):
        await browser.get("/login")
        kept = browser.cookie
        await browser.get("/logout")
        browser.cookie = kept  # a copy of the cookie, e.g. another tab's
        seen = (await browser.get()).json()
        assert seen["user"] is None and seen["ended_reason"] == "signed_out"
        assert seen["ended_elsewhere"] is True


@pytest.mark.parametrize("kind", [kind for kind in STORES if kind != "cookie"])
async def test_a_record_the_store_dropped_reads_as_an_idle_timeout(kind: str) -> None:
    """What is knowable: a sealed cookie naming a record that is gone names a session the
    store collected at its TTL (the idle timeout)."""
    async with setup(kind) as (browser, _, store):
        await browser.get("/login")
        id = (await browser.get()).json()["id"]
        await store.inner.delete(id)
        seen = (await browser.get()).json()
        assert seen["user"] is None and seen["ended_reason"] == "idle_timeout"


@pytest.mark.parametrize("kind", ["cookie", "memory"])
async def test_touch_after_counts_from_the_sessions_own_lifetime(kind: str) -> None:
    lifecycle = BrowserSession(
        state_ttl=TTL,
        state_ttl_extension_policy=Policy.ON_EVERY_REQUEST,
        touch_after=timedelta(minutes=10),
    )
    async with setup(kind, lifecycle) as (browser, clock, _):
        await browser.get("/login?remember=1")
        clock.now += 300  # within touch_after: nothing to extend
        assert (await browser.get()).cookie("id") is None
        clock.now += 600  # past it: extended by its own lifetime, cookie restarted
        response = await browser.get()
        cookie = response.cookie("id")
        assert cookie is not None and cookie.max_age == int(MONTH.total_seconds())
        seen = (await browser.get()).json()
        extended = datetime.fromtimestamp(START + 900, timezone.utc) + MONTH
        assert seen["expires_at"] == extended.isoformat()


@pytest.mark.parametrize(
    "kind", [kind for kind in STORES if kind in ("memory", "redis", "postgres")]
)
async def test_a_racing_write_keeps_the_lifetime_another_request_chose(kind: str) -> None:
    """The lifetime merges as the state does: a write that chose none keeps the stored one."""
    async with setup(kind) as (browser, clock, _):
        await browser.get("/login")
        engine: Any = browser.asgi.engine
        slow = engine.begin([f"id={browser.cookie}".encode()])
        await engine.load(slow)  # loaded before the lifetime was chosen
        await browser.get("/remember")
        slow.session["cart"] = 1
        await finish(engine, slow)
        clock.now += 3 * TTL.total_seconds()
        seen = (await browser.get()).json()
        assert seen["user"] == "ada" and seen["ended_reason"] is None
