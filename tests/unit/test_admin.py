"""SessionAdmin: owned by the middleware (its events, clock and tombstones), or built for a job."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sessionware import (
    BrowserSession,
    Key,
    NotSupportedError,
    SessionAdmin,
    SessionEnded,
    SessionMiddleware,
    get_admin,
    get_session,
)
from sessionware.events import SessionEvent
from sessionware.stores import CookieSessionStore, MemorySessionStore
from tests.client import request

TTL = timedelta(minutes=30)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def make(store: Any, clock: Clock, events: list[SessionEvent]) -> SessionMiddleware:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        session, admin = get_session(scope), get_admin(scope)
        path, body = scope["path"], b""
        if path == "/login":
            session.bind_user("ada")
            session.renew()
        elif path == "/others":
            body = str(await admin.end_all_for("ada", keep=session)).encode()
        elif path == "/others-by-id":
            body = str(await admin.end_all_for("ada", keep=session.id)).encode()
        elif path == "/list":
            body = str(len(await admin.sessions_for("ada"))).encode()
        elif path == "/whoami":
            body = str(session.user_id).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return SessionMiddleware(
        app,
        store=store,
        key=Key.generate(),
        clock=clock,
        on_event=events.append,
        lifecycle=BrowserSession(state_ttl=TTL),
    )


async def login(app: SessionMiddleware) -> str:
    cookie = (await request(app, "POST", "/login")).cookie()
    assert cookie is not None
    return cookie.value


async def test_the_middlewares_admin_reports_through_on_event() -> None:
    events: list[SessionEvent] = []
    app = make(MemorySessionStore(), Clock(), events)
    mine, other, third = await login(app), await login(app), await login(app)
    events.clear()
    r = await request(app, "POST", "/others", cookies={"id": mine})
    assert r.text == "2"
    assert [e for e in events if isinstance(e, SessionEnded)] == [SessionEnded("end_all_for")] * 2
    assert (await request(app, "GET", "/whoami", cookies={"id": mine})).text == "ada"
    for ended in (other, third):
        assert (await request(app, "GET", "/whoami", cookies={"id": ended})).text == "None"


async def test_keep_takes_the_session_or_its_id_never_its_key() -> None:
    events: list[SessionEvent] = []
    app = make(MemorySessionStore(), Clock(), events)
    mine, _ = await login(app), await login(app)
    assert (await request(app, "POST", "/others-by-id", cookies={"id": mine})).text == "1"
    assert (await request(app, "GET", "/whoami", cookies={"id": mine})).text == "ada"
    admin = app.admin
    with pytest.raises(ValueError, match="never its key"):
        await admin.end_all_for("ada", keep="A" * 64)  # the shape of a key


async def test_the_middlewares_admin_uses_its_clock() -> None:
    clock, events = Clock(), []  # type: ignore[var-annotated]
    app = make(MemorySessionStore(), clock, events)
    mine = await login(app)
    await login(app)
    assert (await request(app, "GET", "/list", cookies={"id": mine})).text == "2"
    clock.now += TTL.total_seconds() + 1  # both idle past their TTL, by the middleware's clock
    assert await app.admin.sessions_for("ada") == []


@pytest.mark.parametrize("hash_keys", [True, False], ids=["hashed", "clear"])
@pytest.mark.parametrize("by", ["id", "key"])
async def test_the_deprecated_store_method_never_ends_the_callers_session(
    hash_keys: bool, by: str
) -> None:
    """Issue 24: ``delete_all_for(user, except_key=session.id)`` (an id where a key was
    expected) ended the caller's session too; it warns now, and keeps it, given its id or its
    key, with keys hashed at rest or not (issue 28 item 8)."""
    store = MemorySessionStore(hash_keys=hash_keys)
    app = make(store, Clock(), [])
    mine, other = await login(app), await login(app)
    infos = await SessionAdmin(store).sessions_for("ada")
    engine: Any = app.engine
    tracker = engine.begin([f"id={mine}".encode()])
    await engine.load(tracker)
    my_id = tracker.session.id
    assert my_id in {info.id for info in infos}
    kept = my_id if by == "id" else tracker.session.key
    with pytest.warns(DeprecationWarning, match="end_all_for"):
        assert await store.delete_all_for("ada", except_key=kept) == 1
    assert (await request(app, "GET", "/whoami", cookies={"id": mine})).text == "ada"
    assert (await request(app, "GET", "/whoami", cookies={"id": other})).text == "None"


async def test_a_job_builds_its_own_with_the_middlewares_options() -> None:
    clock, events = Clock(), []  # type: ignore[var-annotated]
    store = MemorySessionStore()
    app = make(store, clock, [])
    await login(app)
    job = SessionAdmin(store, clock=clock, on_event=events.append)
    [info] = await job.sessions_for("ada")
    assert await job.end_session(info.id) is True and events == [SessionEnded("end_session")]
    assert await job.end_session(info.id) is False
    assert await job.end_session("not an id") is False


async def test_the_listing_is_bounded() -> None:
    store = MemorySessionStore()
    app = make(store, Clock(), [])
    for _ in range(5):
        await login(app)
    assert len(await app.admin.sessions_for("ada", limit=3)) == 3
    with pytest.raises(ValueError):
        await app.admin.sessions_for("ada", limit=0)


async def test_the_cookie_store_supports_none_of_it() -> None:
    admin = SessionAdmin(CookieSessionStore())
    for call in (admin.sessions_for("a"), admin.end_all_for("a"), admin.end_session("0" * 64)):
        with pytest.raises(NotSupportedError, match="cookie store"):
            await call


def test_get_admin_without_the_middleware_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"add sessionware\.SessionMiddleware"):
        get_admin({"type": "http"})
