"""A cap per user, through the middleware: ``SessionMiddleware(max_sessions_per_user=N)`` ends a
user's least recently used sessions when a login takes them past N (``SessionEvicted``), and two
logins at once, in two processes (two middlewares, each with its own store client, on one
server), leave at most N.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sessionware import (
    Key,
    NotSupportedError,
    SessionAdmin,
    SessionEvicted,
    SessionMiddleware,
    get_session,
)
from sessionware.stores import (
    CookieSessionStore,
    MemcachedSessionStore,
    MySQLSessionStore,
    PostgresSessionStore,
    RecordStore,
    RedisSessionStore,
    UserIndex,
)
from tests.client import request
from tests.factories import mysql, postgres, redis

KEY = Key.generate()


class Clock:
    """The middleware's clock, moved by the test (stored times are whole seconds)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def make_app(store: Any, limit: int, events: list[object], clock: Clock | None = None) -> Any:
    async def login(req: Request) -> Response:
        session = get_session(req)
        session.renew()
        session.bind_user("ada")
        return PlainTextResponse("logged in")

    async def whoami(req: Request) -> Response:
        return PlainTextResponse(get_session(req).user_id or "anonymous")

    async def write(req: Request) -> Response:
        get_session(req)["n"] = 1
        return PlainTextResponse("written")

    routes = [
        Route("/login", login, methods=["POST"]),
        Route("/whoami", whoami),
        Route("/write", write, methods=["POST"]),
    ]
    options: dict[str, Any] = {"on_event": events.append, "max_sessions_per_user": limit}
    if clock is not None:
        options["clock"] = clock
    middleware = [Middleware(SessionMiddleware, store=store, key=KEY, **options)]
    return Starlette(routes=routes, middleware=middleware)


async def test_a_login_past_the_cap_ends_the_least_recently_used(server_store: RecordStore) -> None:
    if not isinstance(server_store, UserIndex):
        pytest.skip("the store has no user index")  # NotSupportedError: tested below
    events: list[object] = []
    clock = Clock()
    app = make_app(server_store, 2, events, clock)
    browsers: dict[str, dict[str, str]] = {}

    async def call(browser: str, method: str, path: str) -> Any:
        clock.now += 10
        response = await request(app, method, path, cookies=browsers.get(browser))
        cookie = response.cookie()
        if cookie is not None:
            browsers[browser] = {} if cookie.is_removal else {cookie.name: cookie.value}
        return response

    await call("laptop", "POST", "/login")
    await call("phone", "POST", "/login")
    await call("laptop", "POST", "/write")  # the laptop is now the more recently used
    assert not [e for e in events if isinstance(e, SessionEvicted)]
    await call("tablet", "POST", "/login")  # the third: the phone goes
    assert [e for e in events if isinstance(e, SessionEvicted)] == [SessionEvicted()]
    assert (await call("phone", "GET", "/whoami")).text == "anonymous"
    assert (await call("laptop", "GET", "/whoami")).text == "ada"
    assert (await call("tablet", "GET", "/whoami")).text == "ada"
    assert len(await SessionAdmin(server_store).sessions_for("ada")) == 2


@asynccontextmanager
async def twin_stores(kind: str) -> AsyncIterator[tuple[Any, Any]]:
    """Two stores on one server and one table or prefix, as two processes would have."""
    if kind == "redis":
        async with redis.store() as first:
            second = RedisSessionStore.from_url(redis.URL, key_prefix=first.key_prefix)
            try:
                yield first, second
            finally:
                await second.aclose()
    elif kind == "mysql":
        async with mysql.store() as first:
            second = MySQLSessionStore.from_dsn(mysql.DSN, table=first.table)
            try:
                yield first, second
            finally:
                await second.aclose()
    else:
        async with postgres.store() as first:
            second = PostgresSessionStore.from_dsn(postgres.DSN, table=first.table)
            try:
                yield first, second
            finally:
                await second.aclose()


@pytest.mark.parametrize("kind", ["redis", "postgres", "mysql"])
async def test_two_logins_at_once_in_two_processes_leave_at_most_n(kind: str) -> None:
    async with twin_stores(kind) as (first, second):
        apps = [make_app(first, 1, []), make_app(second, 1, [])]
        for _ in range(12):  # each round: one live session, then two logins at once
            await request(apps[0], "POST", "/login")
            logins = await asyncio.gather(
                request(apps[0], "POST", "/login"), request(apps[1], "POST", "/login")
            )
            assert [r.status for r in logins] == [200, 200]
            # At most one, and (the logins taking turns under the cap's lock) not none: two
            # logins that each ended the other would leave the user signed out everywhere.
            assert len(await SessionAdmin(first).sessions_for("ada")) == 1


async def test_the_cap_needs_a_user_index() -> None:
    with pytest.raises(NotSupportedError):
        SessionMiddleware(Starlette(), store=CookieSessionStore(), key=KEY, max_sessions_per_user=3)
    memcached = MemcachedSessionStore.from_url("memcached://127.0.0.1:11211")  # no I/O yet
    with pytest.raises(NotSupportedError):
        SessionMiddleware(Starlette(), store=memcached, key=KEY, max_sessions_per_user=3)
    for wrong in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            SessionMiddleware(
                Starlette(), store=CookieSessionStore(), key=KEY, max_sessions_per_user=wrong
            )
