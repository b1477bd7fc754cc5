"""Sessions found by other indexes, through the middleware: ``session.index("oidc_sid", sid)`` at
login, and an OpenID Connect back-channel logout ending every session of the provider's session
with ``SessionAdmin.end_where`` (the request carries no session cookie: the provider sends it).
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessionware import (
    Key,
    NotSupportedError,
    Session,
    SessionAdmin,
    SessionMiddleware,
    get_admin,
    get_session,
)
from sessionware.events import SessionEnded
from sessionware.session import MAX_INDEX_VALUE
from sessionware.stores import CookieSessionStore, MemorySessionStore, RecordStore, UserIndex
from tests.client import request


def make_app(store: Any, events: list[object]) -> Starlette:
    async def login(req: Request) -> Response:
        body = await req.json()
        session = get_session(req)
        session.renew()
        session.bind_user(body["user"])
        session.index("oidc_sid", body["sid"])
        return PlainTextResponse("logged in")

    async def whoami(req: Request) -> Response:
        return PlainTextResponse(get_session(req).user_id or "anonymous")

    async def write(req: Request) -> Response:
        get_session(req)["n"] = 1
        return PlainTextResponse("written")

    async def leave(req: Request) -> Response:
        get_session(req).index("oidc_sid", None)
        return PlainTextResponse("left")

    async def sessions(req: Request) -> Response:
        infos = await get_admin(req).sessions_where("oidc_sid", req.query_params["sid"])
        return JSONResponse([info.id for info in infos])

    async def backchannel_logout(req: Request) -> Response:
        sid = (await req.json())["sid"]
        return JSONResponse({"ended": await get_admin(req).end_where("oidc_sid", sid)})

    routes = [
        Route("/login", login, methods=["POST"]),
        Route("/whoami", whoami),
        Route("/write", write, methods=["POST"]),
        Route("/leave", leave, methods=["POST"]),
        Route("/sessions", sessions),
        Route("/backchannel-logout", backchannel_logout, methods=["POST"]),
    ]
    middleware = [
        Middleware(SessionMiddleware, store=store, key=Key.generate(), on_event=events.append)
    ]
    return Starlette(routes=routes, middleware=middleware)


async def test_a_back_channel_logout_ends_the_providers_sessions(server_store: RecordStore) -> None:
    if not isinstance(server_store, UserIndex):
        pytest.skip("the store has no index")  # memcached: NotSupportedError, tested below
    events: list[object] = []
    app = make_app(server_store, events)
    browsers: dict[str, dict[str, str]] = {}

    async def call(browser: str, method: str, path: str, **kwargs: Any) -> Any:
        response = await request(app, method, path, cookies=browsers.get(browser), **kwargs)
        cookie = response.cookie()
        if cookie is not None:
            browsers[browser] = {} if cookie.is_removal else {cookie.name: cookie.value}
        return response

    # Two browsers signed in through the provider's session op-1, one through op-2.
    for browser, sid in (("laptop", "op-1"), ("phone", "op-1"), ("tablet", "op-2")):
        assert (
            await call(browser, "POST", "/login", json={"user": "ada", "sid": sid})
        ).status == 200
    assert (await call("laptop", "POST", "/write")).status == 200  # a later write keeps the index
    listed = (await call("admin", "GET", "/sessions?sid=op-1")).json()
    assert len(listed) == 2

    events.clear()
    ended = await call("provider", "POST", "/backchannel-logout", json={"sid": "op-1"})
    assert ended.json() == {"ended": 2}
    assert [e for e in events if isinstance(e, SessionEnded)] == [SessionEnded("end_where")] * 2
    assert (await call("laptop", "GET", "/whoami")).text == "anonymous"
    assert (await call("phone", "GET", "/whoami")).text == "anonymous"
    assert (await call("tablet", "GET", "/whoami")).text == "ada"
    assert (await call("admin", "GET", "/sessions?sid=op-1")).json() == []

    # A session taken out of the index is not ended by it.
    assert (await call("tablet", "POST", "/leave")).status == 200
    ended = await call("provider", "POST", "/backchannel-logout", json={"sid": "op-2"})
    assert ended.json() == {"ended": 0}
    assert (await call("tablet", "GET", "/whoami")).text == "ada"


async def test_the_cookie_store_keeps_no_index() -> None:
    app = make_app(CookieSessionStore(), [])
    response = await request(app, "POST", "/login", json={"user": "ada", "sid": "op-1"})
    assert response.status == 500  # the handler raised NotSupportedError
    with pytest.raises(NotSupportedError):
        await SessionAdmin(CookieSessionStore()).sessions_where("oidc_sid", "op-1")


@pytest.mark.parametrize(
    ("name", "value"),
    [("user", "ada"), ("OIDC", "x"), ("1sid", "x"), ("n" * 33, "x"), ("sid", ""), ("sid", "a\nb")],
)
async def test_an_index_a_store_could_not_hold_is_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        Session().index(name, value)
    if name != "user":  # SessionAdmin finds a user's sessions by "user", as sessions_for does
        with pytest.raises(ValueError):
            await SessionAdmin(MemorySessionStore()).end_where(name, value)
    with pytest.raises(ValueError):
        Session().index("sid", "x" * (MAX_INDEX_VALUE + 1))
