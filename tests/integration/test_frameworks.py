"""The session in each framework's own terms, over HTTP and WebSocket, with the same app shape.

Every app answers ``/set?value=...`` (writes), ``/get`` (reads) and the WebSocket ``/ws`` (sends
the session it sees, then writes ``ws_seen``). Starlette and FastAPI take the middleware their
way (``Middleware``, ``add_middleware``), Litestar both wrapped and as ``DefineMiddleware``, raw
ASGI wrapped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import pytest
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from fastapi import WebSocket as FastAPIWebSocket
from litestar import Litestar, get, websocket
from litestar import Request as LitestarRequest
from litestar.connection import WebSocket as LitestarWebSocket
from litestar.middleware import DefineMiddleware
from litestar.params import FromQuery
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionware import Key, Session, SessionMiddleware, get_session
from sessionware.integrations.fastapi import SessionDep
from sessionware.stores import MemorySessionStore, SessionStore
from tests.client import request
from tests.client import websocket as open_websocket

KEY = Key.generate()
Factory = Callable[[SessionStore], Any]


def starlette_app(store: SessionStore) -> Any:
    async def set_value(request: Request) -> Response:
        request.session["value"] = request.query_params["value"]
        return JSONResponse(dict(request.session))

    async def get_values(request: Request) -> Response:
        return JSONResponse(dict(request.session))

    async def ws(websocket: WebSocket) -> None:
        seen = dict(websocket.session)
        websocket.session["ws_seen"] = True
        await websocket.accept()
        await websocket.send_json(seen)
        await websocket.close()

    routes = [Route("/set", set_value), Route("/get", get_values), WebSocketRoute("/ws", ws)]
    return Starlette(
        routes=routes, middleware=[Middleware(SessionMiddleware, store=store, key=KEY)]
    )


def fastapi_request_session_app(store: SessionStore) -> Any:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, key=KEY)

    @app.get("/set")
    async def set_value(request: FastAPIRequest, value: str) -> dict[str, Any]:
        request.session["value"] = value
        return dict(request.session)

    @app.get("/get")
    async def get_values(request: FastAPIRequest) -> dict[str, Any]:
        return dict(request.session)

    @app.websocket("/ws")
    async def ws(websocket: FastAPIWebSocket) -> None:
        seen = dict(websocket.session)
        websocket.session["ws_seen"] = True
        await websocket.accept()
        await websocket.send_json(seen)
        await websocket.close()

    return app


def fastapi_session_dep_app(store: SessionStore) -> Any:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, key=KEY)

    @app.get("/set")
    async def set_value(session: SessionDep, value: str) -> dict[str, Any]:
        session.insert("value", value)
        return dict(session)

    @app.get("/get")
    async def get_values(session: SessionDep) -> dict[str, Any]:
        assert isinstance(session, Session)
        return dict(session)

    @app.websocket("/ws")
    async def ws(websocket: FastAPIWebSocket, session: SessionDep) -> None:
        seen = dict(session)
        session["ws_seen"] = True
        await websocket.accept()
        await websocket.send_json(seen)
        await websocket.close()

    return app


def litestar_handlers() -> list[Any]:
    @get("/set")
    async def set_value(
        request: LitestarRequest[Any, Any, Any], value: FromQuery[str]
    ) -> dict[str, Any]:
        request.session["value"] = value
        return dict(request.session)

    @get("/get")
    async def get_values(request: LitestarRequest[Any, Any, Any]) -> dict[str, Any]:
        return dict(request.session)

    @websocket("/ws")
    async def ws(socket: LitestarWebSocket[Any, Any, Any]) -> None:
        seen = dict(socket.session)
        socket.session["ws_seen"] = True
        await socket.accept()
        await socket.send_json(seen)
        await socket.close()

    return [set_value, get_values, ws]


def litestar_app(store: SessionStore) -> Any:
    # Litestar's Request.session is scope["session"]: wrapping the app is all it takes.
    return SessionMiddleware(Litestar(litestar_handlers()), store=store, key=KEY)


def litestar_define_middleware_app(store: SessionStore) -> Any:
    # Or as Litestar middleware, around the route handlers.
    middleware = DefineMiddleware(SessionMiddleware, store=store, key=KEY)
    return Litestar(litestar_handlers(), middleware=[middleware])


def raw_asgi_app(store: SessionStore) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = get_session(scope)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            seen = dict(session)
            session["ws_seen"] = True
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(seen)})
            await send({"type": "websocket.close", "code": 1000})
            return
        if scope["path"] == "/set":
            query = parse_qs(scope["query_string"].decode())
            session["value"] = query["value"][0]
        body = json.dumps(dict(session)).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return SessionMiddleware(app, store=store, key=KEY)


FACTORIES: dict[str, Factory] = {
    "starlette": starlette_app,
    "fastapi-request-session": fastapi_request_session_app,
    "fastapi-session-dep": fastapi_session_dep_app,
    "litestar": litestar_app,
    "litestar-define-middleware": litestar_define_middleware_app,
    "raw-asgi": raw_asgi_app,
}


@pytest.fixture(params=sorted(FACTORIES))
def app(request: pytest.FixtureRequest) -> Any:
    return FACTORIES[request.param](MemorySessionStore())


def sent_json(messages: list[dict[str, Any]]) -> Any:
    [text] = [m["text"] or m["bytes"] for m in messages if m["type"] == "websocket.send"]
    return json.loads(text)


async def test_http_writes_and_reads_the_session(app: Any) -> None:
    r = await request(app, "GET", "/get")
    assert r.status == 200 and r.json() == {} and r.cookie() is None
    r = await request(app, "GET", "/set?value=one")
    cookie = r.cookie()
    assert r.status == 200 and cookie is not None and "httponly" in cookie.attrs
    r = await request(app, "GET", "/get", cookies={"id": cookie.value})
    assert r.json() == {"value": "one"}
    assert r.cookie() is None and r.header("vary") == "Cookie"


async def test_websocket_reads_the_session_and_its_write_rides_on_the_accept(app: Any) -> None:
    cookie = (await request(app, "GET", "/set?value=two")).cookie()
    assert cookie is not None
    messages = await open_websocket(app, "/ws", cookies={"id": cookie.value})
    assert sent_json(messages) == {"value": "two"}
    [accept] = [m for m in messages if m["type"] == "websocket.accept"]
    [set_cookie] = [v for k, v in accept["headers"] if k == b"set-cookie"]
    renewed = set_cookie.decode().split(";")[0].partition("=")[2]
    r = await request(app, "GET", "/get", cookies={"id": renewed})
    assert r.json() == {"value": "two", "ws_seen": True}


async def test_websocket_without_a_cookie_sees_an_empty_session(app: Any) -> None:
    messages = await open_websocket(app, "/ws")
    assert sent_json(messages) == {}
    assert messages[-1]["type"] == "websocket.close" and messages[-1]["code"] == 1000
