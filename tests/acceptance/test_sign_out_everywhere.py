"""Sign out everywhere, through the middleware: a user's devices listed and ended from one of them.

The app binds the user at login (and renews the key), lists the user's sessions without their
keys (only which one is the current device's), and signs out every other device.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessionware import Key, SessionAdmin, SessionMiddleware, get_admin, get_session
from sessionware.stores import RecordStore, UserIndex
from tests.client import request


def make_app(store: RecordStore) -> Starlette:
    async def login(req: Request) -> Response:
        session = get_session(req)
        session.bind_user((await req.json())["user"])
        session.renew()
        return PlainTextResponse("logged in")

    async def whoami(req: Request) -> Response:
        return PlainTextResponse(get_session(req).user_id or "anonymous")

    async def sessions(req: Request) -> Response:
        session = get_session(req)
        if session.user_id is None:
            return JSONResponse([])
        return JSONResponse(
            [
                {
                    "created": info.created,
                    "last_seen": info.last_seen,
                    "expires": info.expires,
                    "user_agent": info.user_agent,
                    "current": info.id == session.id,
                }
                for info in await get_admin(req).sessions_for(session.user_id)
            ]
        )

    async def sign_out_others(req: Request) -> Response:
        session = get_session(req)
        assert session.user_id is not None
        ended = await get_admin(req).end_all_for(session.user_id, keep=session)
        return JSONResponse({"ended": ended})

    async def purge(req: Request) -> Response:
        get_session(req).purge()
        return PlainTextResponse("purged")

    routes = [
        Route("/login", login, methods=["POST"]),
        Route("/whoami", whoami),
        Route("/sessions", sessions),
        Route("/sign-out-others", sign_out_others, methods=["POST"]),
        Route("/purge", purge, methods=["POST"]),
    ]
    middleware = [Middleware(SessionMiddleware, store=store, key=Key.generate())]
    return Starlette(routes=routes, middleware=middleware)


async def test_sign_out_other_devices_then_this_one(server_store: RecordStore) -> None:
    if not isinstance(server_store, UserIndex):
        pytest.skip("the store has no per-user index")  # memcached: NotSupportedError
    app = make_app(server_store)
    devices: dict[str, dict[str, str]] = {}

    async def call(device: str, method: str, path: str, **kwargs: Any) -> Any:
        agent = [(b"user-agent", f"Device/{device}".encode())]
        return await request(
            app, method, path, cookies=devices.get(device), headers=agent, **kwargs
        )

    for device in ("1", "2", "3"):
        r = await call(device, "POST", "/login", json={"user": "alice"})
        cookie = r.cookie()
        assert r.status == 200 and cookie is not None
        devices[device] = {"id": cookie.value}
    await call("other", "POST", "/login", json={"user": "bob"})

    listed = (await call("1", "GET", "/sessions")).json()
    assert len(listed) == 3
    assert {entry["user_agent"] for entry in listed} == {"Device/1", "Device/2", "Device/3"}
    assert [entry["user_agent"] for entry in listed if entry["current"]] == ["Device/1"]
    for entry in listed:  # no session key reaches the page
        assert set(entry) == {"created", "last_seen", "expires", "user_agent", "current"}
        assert entry["created"] <= entry["last_seen"] < entry["expires"]

    assert (await call("1", "POST", "/sign-out-others")).json() == {"ended": 2}
    assert (await call("1", "GET", "/whoami")).text == "alice"
    for device in ("2", "3"):
        assert (await call(device, "GET", "/whoami")).text == "anonymous"
        assert (await call(device, "GET", "/sessions")).json() == []
    [only] = (await call("1", "GET", "/sessions")).json()
    assert only["current"] and only["user_agent"] == "Device/1"
    assert len(await SessionAdmin(server_store).sessions_for("bob")) == 1

    r = await call("1", "POST", "/purge")
    cookie = r.cookie()
    assert cookie is not None and cookie.is_removal
    assert (await call("1", "GET", "/whoami")).text == "anonymous"
    assert await SessionAdmin(server_store).sessions_for("alice") == []
    assert len(await SessionAdmin(server_store).sessions_for("bob")) == 1
