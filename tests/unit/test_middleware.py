"""The ASGI adapter: what it refuses at the first request, WebSockets on servers that cannot set
cookies there and from other origins, paths under a root_path, and the headers of its own
refusals."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from sessionware import (
    CSRFMiddleware,
    Key,
    OriginRefused,
    SessionError,
    SessionMiddleware,
    get_session,
)
from sessionware.middleware import route_path
from sessionware.stores import CookieSessionStore, MemorySessionStore
from tests.client import request, websocket

KEY = Key.generate()


async def counter(request: Request) -> Response:
    session = request.session
    session["n"] = session.get("n", 0) + 1
    return PlainTextResponse(str(session["n"]))


@pytest.mark.parametrize("name", ["session", "admin"])
async def test_another_session_middleware_outside_fails_with_one_message(name: str) -> None:
    """Issue 28 item 12: Starlette's SessionMiddleware outside sessionware's was a 500 with
    ``'Session' object has no attribute 'modified'``. A named session refuses it too (issue 26:
    another library's session middleware in the same app)."""
    app = Starlette(
        routes=[Route("/", counter)],
        middleware=[
            Middleware(StarletteSessionMiddleware, secret_key="s" * 32),
            Middleware(SessionMiddleware, name=name, store=MemorySessionStore(), key=KEY),
        ],
    )
    response = await request(app, "GET", "/")
    assert isinstance(response.exception, RuntimeError)
    message = str(response.exception)
    assert "another session middleware" in message and "Starlette's" in message


async def test_another_session_middleware_inside_fails_too() -> None:
    """Inside, it silently bypassed sessionware: the app saw Starlette's dict."""
    app = Starlette(
        routes=[Route("/", counter)],
        middleware=[
            Middleware(SessionMiddleware, store=MemorySessionStore(), key=KEY),
            Middleware(StarletteSessionMiddleware, secret_key="s" * 32),
        ],
    )
    response = await request(app, "GET", "/")
    assert isinstance(response.exception, RuntimeError)
    assert "replaced scope['session']" in str(response.exception)


async def test_two_sessionware_middlewares_fail_clearly() -> None:
    inner = SessionMiddleware(_ok, store=MemorySessionStore(), key=KEY)
    outer = SessionMiddleware(inner, store=MemorySessionStore(), key=KEY)
    with pytest.raises(RuntimeError, match="another sessionware SessionMiddleware"):
        await request(outer, "GET", "/")


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def websocket_app(store: Any) -> SessionMiddleware:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = get_session(scope)
        await receive()
        try:
            session["ws"] = session.get("ws", 0) + 1
            result = "ok"
        except SessionError as exc:
            result = f"refused: {exc}"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": result})
        await send({"type": "websocket.close", "code": 1000})

    return SessionMiddleware(app, store=store, key=KEY)


@pytest.mark.parametrize("store", [MemorySessionStore, CookieSessionStore])
async def test_on_asgi_2_0_a_websocket_cannot_start_a_session(store: Any) -> None:
    """Issue 28 item 13: daphne's scope names no spec_version (ASGI 2.0: accept carries no
    headers); the cookie written before accept was lost, with an orphan record in Redis."""
    messages = await websocket(websocket_app(store()), "/ws", spec_version=None)
    text = next(m["text"] for m in messages if m["type"] == "websocket.send")
    assert text.startswith("refused: this server speaks ASGI 2.0") and "HTTP first" in text
    accept = next(m for m in messages if m["type"] == "websocket.accept")
    assert not accept.get("headers")


async def test_on_asgi_2_0_an_existing_session_still_takes_websocket_writes() -> None:
    store = MemorySessionStore()
    app = websocket_app(store)
    seeded = await app.engine.seed({"ws": 5})
    cookie = seeded.split(";", 1)[0].split("=", 1)[1]
    messages = await websocket(app, "/ws", cookies={"id": cookie}, spec_version=None)
    assert [m["text"] for m in messages if m["type"] == "websocket.send"] == ["ok"]
    later = await websocket(app, "/ws", cookies={"id": cookie}, spec_version="2.4")
    assert [m["text"] for m in later if m["type"] == "websocket.send"] == ["ok"]
    tracker = app.engine.begin([f"id={cookie}".encode()])
    assert dict(await app.engine.load(tracker)) == {"ws": 7}


async def test_on_asgi_2_1_the_cookie_goes_with_the_accept() -> None:
    messages = await websocket(websocket_app(MemorySessionStore()), "/ws", spec_version="2.1")
    accept = next(m for m in messages if m["type"] == "websocket.accept")
    assert any(name == b"set-cookie" for name, _ in accept["headers"])


def test_route_path_strips_the_root_path() -> None:
    scope = {"path": "/app/admin/x", "root_path": "/app"}
    assert route_path(scope) == "/admin/x"
    assert route_path({"path": "/app", "root_path": "/app"}) == "/"
    assert route_path({"path": "/application", "root_path": "/app"}) == "/application"
    assert route_path({"path": "/admin", "root_path": ""}) == "/admin"


async def test_csrf_exempt_paths_are_the_apps_own_under_a_mount() -> None:
    """Issue 28 item 3: under ``Mount("/app", ...)`` the exempt list failed closed."""

    async def hook(request: Request) -> Response:
        return PlainTextResponse("hooked")

    inner = Starlette(
        routes=[Route("/hooks/in", hook, methods=["POST"])],
        middleware=[
            Middleware(SessionMiddleware, store=MemorySessionStore(), key=KEY),
            Middleware(CSRFMiddleware, exempt=["/hooks/"]),
        ],
    )
    app = Starlette(routes=[Mount("/app", app=inner)])
    response = await request(app, "POST", "/app/hooks/in")
    assert response.status == 200 and response.text == "hooked"


async def test_an_oversized_cookie_500_still_varies_by_cookie() -> None:
    """Issue 28 item 13: the refusal lacked ``Vary: Cookie`` when the request carried it."""

    async def big(request: Request) -> Response:
        request.session["blob"] = "x" * 5000
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", counter), Route("/big", big)],
        middleware=[Middleware(SessionMiddleware, store=CookieSessionStore(), key=KEY)],
    )
    cookie = (await request(app, "GET", "/")).cookie()
    assert cookie is not None
    response = await request(app, "GET", "/big", cookies={"id": cookie.value})
    assert response.status == 500 and response.body == b""
    assert response.header("vary") == "Cookie" and response.set_cookies == []


@pytest.mark.parametrize("store", [MemorySessionStore, CookieSessionStore])
async def test_a_background_write_to_a_new_visitors_session_raises(store: Any) -> None:
    """Issue 28 item 11: it was silently lost (no error, no cookie, no log)."""
    from starlette.background import BackgroundTask

    errors: list[BaseException] = []

    async def page(request: Request) -> Response:
        session = request.session

        def later() -> None:
            try:
                session["from_background"] = True
            except SessionError as exc:
                errors.append(exc)

        return PlainTextResponse("ok", background=BackgroundTask(later))

    app = Starlette(
        routes=[Route("/", page)],
        middleware=[Middleware(SessionMiddleware, store=store(), key=KEY)],
    )
    response = await request(app, "GET", "/")
    assert response.status == 200 and response.set_cookies == []
    [error] = errors
    assert "response" in str(error) and "before the response starts" in str(error)


def origin_app(**options: Any) -> tuple[SessionMiddleware, list[Any]]:
    """A WebSocket endpoint that echoes its session's user; the events it emits."""
    events: list[Any] = []
    name = options.get("name", "session")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": str(get_session(scope, name).get("user"))})
        await send({"type": "websocket.close", "code": 1000})

    store = options.pop("store", MemorySessionStore())
    middleware = SessionMiddleware(app, store=store, key=KEY, on_event=events.append, **options)
    return middleware, events


async def _signed_in(app: SessionMiddleware) -> str:
    seeded = await app.engine.seed({"user": "alice"})
    return seeded.split(";", 1)[0].split("=", 1)[1]


@pytest.mark.parametrize("store", [MemorySessionStore, CookieSessionStore])
async def test_a_cross_origin_websocket_handshake_with_the_cookie_is_refused(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 28 item 2 (SECURITY.md row 64): a page of another site opened a WebSocket with
    the victim's cookie and was served the session."""
    app, events = origin_app(store=store())
    cookie = await _signed_in(app)
    messages = await websocket(app, "/ws", cookies={"id": cookie}, origin="https://evil.example")
    assert messages == [{"type": "websocket.close", "code": 1008}]
    assert events == [OriginRefused()]
    [line] = [r.getMessage() for r in caplog.records if "refused (403)" in r.getMessage()]
    assert "https://evil.example" in line and cookie not in line


async def test_a_refused_handshake_is_a_403_response_where_the_server_has_the_extension() -> None:
    """Starlette's TestClient advertises ``websocket.http.response``, as uvicorn and hypercorn."""
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient, WebSocketDenialResponse
    from starlette.websockets import WebSocket

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(str(ws.session.get("user")))
        await ws.close()

    store = MemorySessionStore()
    app = Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[Middleware(SessionMiddleware, store=store, key=KEY)],
    )
    cookie = await _signed_in(SessionMiddleware(_ok, store=store, key=KEY))
    with TestClient(app, base_url="https://testserver") as client:
        client.cookies.set("id", cookie)
        evil = {"origin": "https://evil.example"}
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect("/ws", headers=evil),
        ):
            pass
        assert denied.value.status_code == 403 and denied.value.content == b""
        # TestClient opens ws://testserver, the socket of a page at http://testserver
        with client.websocket_connect("/ws", headers={"origin": "http://testserver"}) as ws:
            assert ws.receive_text() == "alice"


@pytest.mark.parametrize(
    ("scheme", "host", "origin"),
    [
        ("wss", b"testserver", "https://testserver"),
        ("wss", b"TestServer:443", "https://testserver"),
        ("ws", b"localhost:8000", "http://localhost:8000"),
        ("wss", None, "https://testserver"),  # no Host: the ASGI server's address
        ("ws", b"[::1]:8000", "http://[::1]:8000"),
    ],
)
async def test_a_same_origin_handshake_is_accepted(
    scheme: str, host: bytes | None, origin: str
) -> None:
    app, events = origin_app()
    cookie = await _signed_in(app)

    async def through(scope: Any, receive: Any, send: Any) -> None:
        scope["scheme"] = scheme
        scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"host"]
        if host is not None:
            scope["headers"].append((b"host", host))
        await app(scope, receive, send)

    messages = await websocket(through, "/ws", cookies={"id": cookie}, origin=origin)
    assert [m.get("text") for m in messages if m["type"] == "websocket.send"] == ["alice"]
    assert OriginRefused() not in events


@pytest.mark.parametrize(
    "origin",
    [
        "http://testserver",  # the page's scheme differs from the handshake's (wss)
        "https://testserver:8443",
        "https://testserver.evil.example",
        "null",
        "https://testserver/",
    ],
)
async def test_a_near_miss_origin_is_refused(origin: str) -> None:
    app, _ = origin_app()
    cookie = await _signed_in(app)
    messages = await websocket(app, "/ws", cookies={"id": cookie}, origin=origin)
    assert messages == [{"type": "websocket.close", "code": 1008}]


async def test_an_allowed_origin_is_accepted() -> None:
    app, _ = origin_app(websocket_origins=["https://App.example.com:443", "http://localhost:3000"])
    cookie = await _signed_in(app)
    for origin in ("https://app.example.com", "http://localhost:3000"):
        messages = await websocket(app, "/ws", cookies={"id": cookie}, origin=origin)
        assert [m.get("text") for m in messages if m["type"] == "websocket.send"] == ["alice"]
    refused = await websocket(app, "/ws", cookies={"id": cookie}, origin="http://localhost:3001")
    assert refused == [{"type": "websocket.close", "code": 1008}]


async def test_without_the_cookie_or_without_origin_a_handshake_passes() -> None:
    """No cookie: nothing to steal (a new visitor's session is the attacker's own). No Origin:
    not a browser, which no page can make open a socket."""
    app, events = origin_app()
    cookie = await _signed_in(app)
    anonymous = await websocket(app, "/ws", origin="https://evil.example")
    assert [m.get("text") for m in anonymous if m["type"] == "websocket.send"] == ["None"]
    native = await websocket(app, "/ws", cookies={"id": cookie})
    assert [m.get("text") for m in native if m["type"] == "websocket.send"] == ["alice"]
    assert OriginRefused() not in events


@pytest.mark.parametrize(
    "origins",
    [["https://app.example.com/"], ["app.example.com"], ["ftp://x"], [None], "https://a.example"],
)
def test_websocket_origins_that_are_not_origins_fail_at_construction(origins: Any) -> None:
    with pytest.raises((ValueError, TypeError), match=r"websocket_origins.*(not an origin|a list)"):
        SessionMiddleware(_ok, store=MemorySessionStore(), key=KEY, websocket_origins=origins)


async def test_the_check_follows_the_middlewares_own_cookie() -> None:
    """A named session checks its own cookie; a header-carried one has none a page could make
    the browser send."""
    from sessionware import HeaderTransport

    named, _ = origin_app(name="admin")
    cookie = await _signed_in(named)
    evil = "https://evil.example"
    refused = await websocket(named, "/ws", cookies={"admin": cookie}, origin=evil)
    assert refused == [{"type": "websocket.close", "code": 1008}]
    other = await websocket(named, "/ws", cookies={"id": cookie}, origin=evil)
    assert other[0]["type"] == "websocket.accept"
    headed, _ = origin_app(transport=HeaderTransport())
    assert headed.origins is None
    passed = await websocket(headed, "/ws", cookies={"id": cookie}, origin=evil)
    assert passed[0]["type"] == "websocket.accept"
