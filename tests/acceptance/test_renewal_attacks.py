"""A key held before a login cannot reach the logged-in session (issue 24), over the memory,
Redis and PostgreSQL stores: not through a WebSocket left open across the login, not through a
request that loaded before it and committed after, and not by replacing the login's cookie."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sessionware import CSRFMiddleware, Key, SessionError, SessionMiddleware, csrf_token
from tests.client import Gate, RecordingStore, request
from tests.conftest import FACTORIES

STORES = [name for name in ("memory", "redis", "postgres") if name in FACTORIES]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RecordingStore]:
    async with FACTORIES[request.param].store() as inner:
        yield RecordingStore(inner)


async def set_values(request: Request) -> Response:
    request.session.update(await request.json())
    return JSONResponse(dict(request.session))


async def everything(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def login(request: Request) -> Response:
    request.session["user"] = "victim"
    request.session.renew()
    return PlainTextResponse("welcome")


async def form(request: Request) -> Response:
    return PlainTextResponse(csrf_token(request.session))


async def transfer(request: Request) -> Response:
    return PlainTextResponse("transferred")


def make(store: RecordingStore) -> Starlette:
    return Starlette(
        routes=[
            Route("/set", set_values, methods=["POST"]),
            Route("/all", everything),
            Route("/login", login, methods=["POST"]),
            Route("/form", form),
            Route("/transfer", transfer, methods=["POST"]),
        ],
        middleware=[
            Middleware(SessionMiddleware, store=store, key=KEY),
            Middleware(CSRFMiddleware, exempt=["/login", "/set"]),
        ],
    )


KEY = Key.generate()


async def planted(app: Starlette) -> str:
    """A session the attacker made and planted in the victim's browser: both hold its key."""
    cookie = (await request(app, "POST", "/set", json={"theme": "dark"})).cookie()
    assert cookie is not None
    return cookie.value


async def test_a_websocket_open_across_the_login_cannot_write_into_it(
    store: RecordingStore,
) -> None:
    app = make(store)
    key = await planted(app)
    accepted, logged_in = asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def socket_app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        await send({"type": "websocket.accept"})
        accepted.set()
        await logged_in.wait()
        session["payout_account"] = "attacker"  # changed after the victim logged in
        await send({"type": "websocket.send", "text": "sent"})
        try:
            session["again"] = 1
            outcome.append("written")
        except SessionError as exc:
            outcome.append(f"refused: {exc}")
        await send({"type": "websocket.close", "code": 1000})

    socket = SessionMiddleware(socket_app, store=store, key=KEY)
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "path": "/ws",
        "headers": [(b"cookie", f"id={key}".encode())],
        "scheme": "wss",
    }
    connect = asyncio.Queue[dict[str, Any]]()
    await connect.put({"type": "websocket.connect"})
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.create_task(socket(scope, connect.get, send))
    await asyncio.wait_for(accepted.wait(), 10)
    r = await request(app, "POST", "/login", cookies={"id": key})
    fresh = r.cookie()
    assert fresh is not None and fresh.value != key
    logged_in.set()
    await asyncio.wait_for(task, 10)
    state = (await request(app, "GET", "/all", cookies={"id": fresh.value})).json()
    assert state == {"theme": "dark", "user": "victim"}, "nothing of the socket's got in"
    assert outcome and outcome[0].startswith("refused: the session was renewed by a login")


async def test_a_csrf_secret_made_before_the_login_is_not_carried_into_it(
    store: RecordingStore,
) -> None:
    """The attacker's request loads the planted key and makes a CSRF secret; the victim logs in
    before it commits. Before, the secret landed in the logged-in session and the attacker's
    token was accepted there. (The attacker's request is served by another process: one
    process's writes of a session take turns, so there the login would wait for it.)"""
    app, elsewhere = make(store), make(store)
    key = await planted(app)
    store.hook = gate = Gate("put")
    attacker = asyncio.create_task(request(elsewhere, "GET", "/form", cookies={"id": key}))
    await asyncio.wait_for(gate.arrived.wait(), 30)
    store.hook = None
    r = await request(app, "POST", "/login", cookies={"id": key})
    fresh = r.cookie()
    assert fresh is not None
    gate.release.set()
    answer = await attacker
    assert answer.status == 409 and answer.set_cookies == []
    assert answer.body == b"", "the attacker learns no token from the refused request"
    state = (await request(app, "GET", "/all", cookies={"id": fresh.value})).json()
    assert "_csrf" not in state and state == {"theme": "dark", "user": "victim"}


async def test_a_request_with_a_renewed_key_never_replaces_the_login_cookie(
    store: RecordingStore,
) -> None:
    """A parallel request of the same browser still carries the pre-login key: it reads an
    empty session, and if it writes, gets a 409 and no cookie (before, its new session's
    cookie replaced the login's: logged out)."""
    app = make(store)
    key = await planted(app)
    fresh = (await request(app, "POST", "/login", cookies={"id": key})).cookie()
    assert fresh is not None
    read = await request(app, "GET", "/all", cookies={"id": key})
    assert read.json() == {} and read.set_cookies == []
    write = await request(app, "POST", "/set", cookies={"id": key}, json={"counter": 1})
    assert write.status == 409 and write.set_cookies == []
    state = (await request(app, "GET", "/all", cookies={"id": fresh.value})).json()
    assert state == {"theme": "dark", "user": "victim"}
