"""The ASGI adapter: what it refuses at the first request, WebSockets on servers that cannot set
cookies there and from other origins, paths under a root_path, and the headers of its own
refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from sessionware import (
    CSRFMiddleware,
    Key,
    OriginRefused,
    SessionError,
    SessionMiddleware,
    get_session,
)
from sessionware.middleware import route_path
from sessionware.stores import CookieSessionStore, MemorySessionStore, StoreError
from tests.client import RecordingStore, lifespan, request, websocket

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


# --- issue 28 item 15: the lifespan, a store check at start-up, the store-failure body ---------


class CheckedStore(MemorySessionStore):
    """A memory store whose ``check`` notes each call in ``log``, and fails with ``error``."""

    def __init__(self, log: list[str], error: StoreError | None = None) -> None:
        super().__init__()
        self.log, self.error = log, error

    async def check(self) -> None:
        self.log.append("check")
        if self.error is not None:
            raise self.error


def test_the_apps_own_lifespan_runs_after_the_check_and_sees_every_message() -> None:
    log: list[str] = []

    @asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[dict[str, str]]:
        log.append("app started")
        yield {"greeting": "hello"}
        log.append("app stopped")

    async def greet(request: Request) -> Response:
        return PlainTextResponse(request.state.greeting)

    app = Starlette(
        routes=[Route("/", greet)],
        lifespan=own,
        middleware=[
            Middleware(
                SessionMiddleware,
                store=CheckedStore(log),
                key=KEY,
                check_store_on_startup=True,
            )
        ],
    )
    with TestClient(app, base_url="https://testserver") as client:
        assert log == ["check", "app started"]
        assert client.get("/").text == "hello"  # the app's lifespan state reached the request
    assert log == ["check", "app started", "app stopped"]


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that knows only HTTP, as plain ASGI apps often do."""
    assert scope["type"] == "http", "not an HTTP request"
    await PlainTextResponse("ok")(scope, receive, send)


async def quiet(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An app that ignores every scope but HTTP: it returns without answering."""
    if scope["type"] == "http":
        await bare(scope, receive, send)


@pytest.mark.parametrize("app", [bare, quiet])
async def test_an_app_without_lifespan_support_still_starts_and_stops(app: Any) -> None:
    log: list[str] = []
    wrapped = SessionMiddleware(app, store=CheckedStore(log), key=KEY, check_store_on_startup=True)
    served: list[int] = []

    async def during() -> None:
        served.append((await request(wrapped, "GET", "/")).status)

    sent = await lifespan(wrapped, during)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert log == ["check"] and served == [200]


async def test_without_startup_work_the_lifespan_is_left_to_the_app() -> None:
    """No check and no sweeper: the middleware does not touch the lifespan (as before)."""
    log: list[str] = []
    wrapped = SessionMiddleware(bare, store=CheckedStore(log), key=KEY)
    with pytest.raises(AssertionError, match="not an HTTP request"):
        await lifespan(wrapped)
    assert log == []


async def test_a_store_that_fails_its_check_fails_the_startup_and_the_app_never_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    error = StoreError("Redis PING failed: 127.0.0.1:6390: ConnectionRefusedError")
    started: list[str] = []

    @asynccontextmanager
    async def own(app: Starlette) -> AsyncIterator[None]:
        started.append("app")
        yield

    app = Starlette(
        lifespan=own,
        middleware=[
            Middleware(
                SessionMiddleware,
                store=CheckedStore(log, error),
                key=KEY,
                check_store_on_startup=True,
            )
        ],
    )
    sent = await lifespan(app)
    assert sent == [{"type": "lifespan.startup.failed", "message": str(error)}]
    assert log == ["check"] and started == []
    assert "session store check at start-up failed: Redis PING failed: 127.0.0.1:6390" in (
        caplog.text
    )


async def test_a_passing_check_is_logged_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="sessionware")
    wrapped = SessionMiddleware(bare, store=CheckedStore([]), key=KEY, check_store_on_startup=True)
    await lifespan(wrapped)
    assert "session store check at start-up passed (CheckedStore)" in caplog.text


def test_store_error_response_must_be_callable() -> None:
    with pytest.raises(TypeError, match="store_error_response must be a callable"):
        SessionMiddleware(
            bare,
            store=MemorySessionStore(),
            key=KEY,
            store_error_response=JSONResponse({"error": "later"}),  # a response, not a factory
        )


def failing_store() -> RecordingStore:
    store = RecordingStore(MemorySessionStore())

    async def hook(name: str) -> None:
        if name == "get":
            raise StoreError("the store at 10.0.0.7:6379 is down")

    store.hook = hook
    return store


async def test_store_error_response_is_the_body_of_the_503_and_sees_nothing_secret() -> None:
    seen: list[dict[str, Any]] = []

    def apology() -> Any:
        response = JSONResponse(
            {"error": "try again soon"},
            headers={"set-cookie": "tracking=1", "cache-control": "max-age=600"},
            status_code=418,
        )

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            seen.append(scope)
            await response(scope, receive, send)

        return app

    app = Starlette(
        routes=[Route("/", counter)],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=failing_store(),
                key=KEY,
                store_error_response=apology,
            )
        ],
    )
    cookie = (await request(app, "GET", "/")).cookie()
    assert cookie is not None
    response = await request(app, "GET", "/?token=abc", cookies={"id": cookie.value})
    assert response.status == 503 and response.json() == {"error": "try again soon"}
    assert response.set_cookies == [] and response.header("cache-control") == "no-store"
    assert response.header("vary") == "Cookie"
    assert response.header("content-type") == "application/json"
    [scope] = seen
    assert scope["headers"] == [] and scope["query_string"] == b"" and "session" not in scope
    assert "10.0.0.7" not in response.text


async def test_a_store_error_response_that_fails_gives_the_empty_503() -> None:
    def broken() -> Any:
        raise RuntimeError("no template")

    app = Starlette(
        routes=[Route("/", counter)],
        middleware=[
            Middleware(
                SessionMiddleware, store=failing_store(), key=KEY, store_error_response=broken
            )
        ],
    )
    cookie = (await request(app, "GET", "/")).cookie()
    assert cookie is not None
    response = await request(app, "GET", "/", cookies={"id": cookie.value})
    assert response.status == 503 and response.body == b""


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
