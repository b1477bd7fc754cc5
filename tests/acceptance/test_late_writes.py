"""Changes after the response head: streaming bodies, background tasks and WebSockets.

A server-side session whose key the client already holds keeps taking changes (saved before each
streamed message goes out, and once more when the app returns); anything that would need a new
cookie raises ``SessionError`` instead of vanishing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionware import Key, SessionError, SessionMiddleware, get_session
from sessionware.stores import SessionStore
from tests.acceptance.apps import ROUTES
from tests.client import request, websocket
from tests.client import stored as stored_state


async def stream(request: Request) -> Response:
    session = request.session

    async def body() -> AsyncIterator[bytes]:
        yield b"head;"
        for action in request.query_params.get("do", "").split(","):
            try:
                if action == "write":
                    session["streamed"] = True
                elif action == "renew":
                    session.renew()
                elif action == "purge":
                    session.purge()
                yield f"{action}:ok;".encode()
            except SessionError as exc:
                yield f"{action}:refused ({exc});".encode()

    return StreamingResponse(body())


async def background(request: Request) -> Response:
    def later() -> None:
        request.session["from_background"] = True

    return PlainTextResponse("ok", background=BackgroundTask(later))


async def ws_endpoint(ws: WebSocket) -> None:
    session = get_session(ws)
    if ws.query_params.get("create"):
        session["created_by_ws"] = True
    await ws.accept()
    session["ws_messages"] = session.get("ws_messages", 0) + 1
    await ws.send_json(dict(session))
    session["ws_messages"] += 1
    try:
        session.renew()
        renewed = "ok"
    except SessionError:
        renewed = "refused"
    await ws.send_text(renewed)
    await ws.close()


def app(store: SessionStore, key: Key) -> Starlette:
    return Starlette(
        routes=[
            *ROUTES,
            Route("/stream", stream),
            Route("/background", background),
            WebSocketRoute("/ws", ws_endpoint),
        ],
        middleware=[Middleware(SessionMiddleware, store=store, key=key)],
    )


async def _logged_in(application: Any) -> str:
    cookie = (await request(application, "POST", "/set", json={"user": "u"})).cookie()
    assert cookie is not None
    return cookie.value


async def test_streamed_change_to_existing_session_is_saved(server_store: SessionStore) -> None:
    application = app(server_store, Key.generate())
    cookie = await _logged_in(application)
    r = await request(application, "GET", "/stream?do=write", cookies={"id": cookie})
    assert r.text == "head;write:ok;"
    assert r.set_cookies == []
    state = (await request(application, "GET", "/all", cookies={"id": cookie})).json()
    assert state == {"user": "u", "streamed": True}


async def test_streamed_change_needing_a_new_cookie_is_refused(server_store: SessionStore) -> None:
    application = app(server_store, Key.generate())
    r = await request(application, "GET", "/stream?do=write")
    assert r.text.startswith("head;write:refused (the session cannot get a new key")
    cookie = await _logged_in(application)
    r = await request(application, "GET", "/stream?do=renew", cookies={"id": cookie})
    assert "renew:refused" in r.text


async def test_streamed_purge_ends_the_session(server_store: SessionStore) -> None:
    application = app(server_store, Key.generate())
    cookie = await _logged_in(application)
    r = await request(application, "GET", "/stream?do=purge,write", cookies={"id": cookie})
    assert r.text == "head;purge:ok;write:ok;"  # writes after a purge are no-ops, as always
    assert (await request(application, "GET", "/all", cookies={"id": cookie})).json() == {}


async def test_cookie_store_refuses_changes_after_the_head() -> None:
    from sessionware.stores import CookieSessionStore

    application = app(CookieSessionStore(), Key.generate())
    cookie = await _logged_in(application)
    r = await request(application, "GET", "/stream?do=write", cookies={"id": cookie})
    assert "write:refused" in r.text


async def test_background_task_changes_are_saved(server_store: SessionStore) -> None:
    application = app(server_store, Key.generate())
    cookie = await _logged_in(application)
    await request(application, "GET", "/background", cookies={"id": cookie})
    state = (await request(application, "GET", "/all", cookies={"id": cookie})).json()
    assert state == {"user": "u", "from_background": True}


async def test_websocket_changes_are_saved_on_each_send(server_store: SessionStore) -> None:
    application = app(server_store, Key.generate())
    cookie = await _logged_in(application)
    messages = await websocket(application, "/ws", cookies={"id": cookie})
    assert json.loads(messages[1]["text"]) == {"user": "u", "ws_messages": 1}
    assert messages[2]["text"] == "refused"
    state = (await request(application, "GET", "/all", cookies={"id": cookie})).json()
    assert state == {"user": "u", "ws_messages": 2}


async def test_session_created_before_accept_gets_its_cookie_in_accept(
    server_store: SessionStore,
) -> None:
    key = Key.generate()
    application = app(server_store, key)
    messages = await websocket(application, "/ws?create=1")
    accept = messages[0]
    assert accept["type"] == "websocket.accept"
    cookies = [v.decode() for n, v in accept.get("headers", []) if n == b"set-cookie"]
    assert len(cookies) == 1 and cookies[0].startswith("id=")
    value = cookies[0].split(";")[0][len("id=") :]
    state = (await request(application, "GET", "/all", cookies={"id": value})).json()
    assert state == {"created_by_ws": True, "ws_messages": 2}


async def test_bound_user_and_agent_are_stored_beside_the_state(server_store: SessionStore) -> None:
    async def login(req: Request) -> Response:
        session = get_session(req)
        session.bind_user("user-42")
        return PlainTextResponse(session.user_id or "")

    async def whoami(req: Request) -> Response:
        session = get_session(req)
        return PlainTextResponse(f"{session.user_id}:{session.key is not None}")

    key = Key.generate()
    application = Starlette(
        routes=[Route("/login", login, methods=["POST"]), Route("/whoami", whoami)],
        middleware=[Middleware(SessionMiddleware, store=server_store, key=key)],
    )
    r = await request(
        application, "POST", "/login", headers=[(b"user-agent", b"Mozilla/5.0 (X11) Test/1.0")]
    )
    cookie = r.cookie()
    assert r.text == "user-42" and cookie is not None
    r = await request(application, "GET", "/whoami", cookies={"id": cookie.value})
    assert r.text == "user-42:True"
    from urllib.parse import unquote

    from sessionware import ContentSecurity
    from sessionware.crypto import unseal

    opened = unseal(ContentSecurity.PRIVATE, [key], "id", unquote(cookie.value))
    assert opened is not None
    stored = await stored_state(server_store, opened[0])
    assert stored is not None and stored == {}
    assert stored.user == "user-42" and stored.agent == "Mozilla/5.0 (X11) Test/1.0"
    assert stored.created is not None and stored.seen is not None
