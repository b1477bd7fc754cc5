"""The app every ASGI server in test_servers.py serves, imported by the server as ``module:app``.

Two copies of one small Starlette app, each with its own ``SessionMiddleware`` and
``CSRFMiddleware``: under ``/db`` on an SQLite file (the server-side path) and under ``/cookie``
on the cookie store (the client-side path). Each session cookie is scoped to its mount
(``Path=/db``, ``Path=/cookie``). Endpoints never let an expected ``SessionError`` escape: they
report it in the body, so a traceback in a server's log always means something went wrong.

A server imports the app by name, so its settings come from the environment:

- ``SESSIONWARE_SERVERS_KEY``: the key, 128 hex characters;
- ``SESSIONWARE_SERVERS_DB``: the SQLite file;
- ``SESSIONWARE_SERVERS_SECURE``: ``1`` for a server behind TLS (Secure cookies), else ``0``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionware import (
    CSRFMiddleware,
    Key,
    SessionError,
    SessionMiddleware,
    csrf_token,
    get_session,
)
from sessionware.stores import CookieSessionStore
from sessionware.stores.sqlite import SQLiteSessionStore


def _refused(exc: SessionError) -> str:
    return f"refused: {exc}"


async def count(request: Request) -> JSONResponse:
    """The counter: one more on every visit."""
    session = get_session(request)
    session["count"] = session.get("count", 0) + 1
    return JSONResponse({"count": session["count"]})


async def state(request: Request) -> JSONResponse:
    """The whole session, as stored (reading it counts as using it)."""
    return JSONResponse(dict(get_session(request)))


async def token(request: Request) -> JSONResponse:
    """A CSRF token for this session (a new visitor's session starts here)."""
    return JSONResponse({"token": csrf_token(get_session(request))})


async def login(request: Request) -> JSONResponse:
    """Sign in as the posted user: a new key (``renew``), as every login should."""
    session = get_session(request)
    session.renew()
    session["user"] = (await request.json())["user"]
    return JSONResponse({"user": session["user"]})


async def logout(request: Request) -> JSONResponse:
    """Sign out: the session ends (``purge``). The (empty) body is read first: hypercorn's
    HTTP/2 drops the whole connection when a request's end arrives after its answer
    (pgjones/hypercorn#329)."""
    await request.body()
    get_session(request).purge()
    return JSONResponse({"ended": True})


async def stream(request: Request) -> StreamingResponse:
    """A streamed body that writes to the session between its chunks."""
    session = get_session(request)

    async def body() -> AsyncIterator[bytes]:
        yield b"head;"
        try:
            session["streamed"] = session.get("streamed", 0) + 1
            yield b"write:ok;"
        except SessionError as exc:
            yield f"write:{_refused(exc)};".encode()
        yield b"tail"

    return StreamingResponse(body(), media_type="text/plain")


def _scope_facts(scope: Any) -> dict[str, Any]:
    """What a server says about itself in a scope: the ASGI versions and extensions."""
    return {
        "asgi": scope.get("asgi"),
        "extensions": sorted(scope.get("extensions") or {}),
        "http_version": scope.get("http_version"),
        "port_type": type(scope["server"][1]).__name__ if scope.get("server") else None,
    }


async def scope_facts(request: Request) -> JSONResponse:
    """The HTTP scope's facts (test_servers.py's capability table)."""
    return JSONResponse(_scope_facts(request.scope))


async def websocket(ws: WebSocket) -> None:
    """Writes ``?before=...`` before ``accept()`` and counts ``?after=1`` after it, then sends
    one JSON report (the scope's facts, what each write did, the session) and closes."""
    session = get_session(ws)
    report: dict[str, Any] = _scope_facts(ws.scope)
    before = ws.query_params.get("before")
    if before is not None:
        try:
            session["ws_before"] = before
            report["before"] = "ok"
        except SessionError as exc:
            report["before"] = _refused(exc)
    await ws.accept()
    if ws.query_params.get("after"):
        try:
            session["ws_after"] = session.get("ws_after", 0) + 1
            report["after"] = "ok"
        except SessionError as exc:
            report["after"] = _refused(exc)
    report["state"] = dict(session)
    await ws.send_json(report)
    await ws.close()


ROUTES = [
    Route("/count", count),
    Route("/state", state),
    Route("/token", token),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/stream", stream),
    Route("/scope", scope_facts),
    WebSocketRoute("/ws", websocket),
]


def mounted(path: str, store: Any, key: Key, secure: bool) -> Mount:
    """The routes under ``path``, with their own session (cookie scoped to ``path``) and CSRF."""
    middleware = [
        Middleware(SessionMiddleware, store=store, key=key, cookie_secure=secure, cookie_path=path),
        Middleware(CSRFMiddleware),
    ]
    return Mount(path, app=Starlette(routes=ROUTES, middleware=middleware))


def build() -> Starlette:
    """The app, from the environment variables above."""
    key = Key.from_hex(os.environ["SESSIONWARE_SERVERS_KEY"])
    secure = os.environ["SESSIONWARE_SERVERS_SECURE"] == "1"
    sqlite = SQLiteSessionStore(os.environ["SESSIONWARE_SERVERS_DB"])
    return Starlette(
        routes=[
            mounted("/db", sqlite, key, secure),
            mounted("/cookie", CookieSessionStore(), key, secure),
        ]
    )


app = build() if "SESSIONWARE_SERVERS_KEY" in os.environ else None
