"""Transports and named sessions at the edges: what is refused at construction and at the
first request, how a header is matched, CSRF by transport, WebSockets, and the defaults kept
(issue 26, items 1 and 2). The flows over every store are in tests/acceptance/test_transports.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionware import (
    CookieTransport,
    CSRFMiddleware,
    DeviceBinding,
    HeaderTransport,
    Key,
    NotSupportedError,
    Session,
    SessionMiddleware,
    csrf_token,
    get_admin,
    get_session,
)
from sessionware.stores import CookieSessionStore, MemorySessionStore
from sessionware.transport import COOKIE
from tests.client import Gate, RecordingStore, request, websocket

KEY = Key.generate()
HEADER_FIRST = [HeaderTransport(), CookieTransport()]


def bearing(token: str, scheme: str = "Session") -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"{scheme} {token}".strip().encode("latin-1"))]


async def count(request: Request) -> Response:
    session = get_session(request)
    await session.load()
    session["n"] = session.get("n", 0) + 1
    return JSONResponse({"n": session["n"], "by": type(session.transport).__name__})


async def token_page(request: Request) -> Response:
    return PlainTextResponse(csrf_token(request.session))


def app_with(store: Any = None, *, csrf: bool = False, **options: Any) -> Starlette:
    """The counter (``/``), a CSRF token page and a counting WebSocket, under ``options``."""
    options.setdefault("key", KEY)
    middleware = [
        Middleware(
            SessionMiddleware, store=MemorySessionStore() if store is None else store, **options
        )
    ]
    if csrf:
        middleware.append(Middleware(CSRFMiddleware))
    return Starlette(
        routes=[
            Route("/", count, methods=["GET", "POST"]),
            Route("/token", token_page),
            WebSocketRoute("/ws", counting_socket),
        ],
        middleware=middleware,
    )


async def counting_socket(socket: WebSocket) -> None:
    session = get_session(socket)
    session["n"] = session.get("n", 0) + 1
    await socket.accept()
    await socket.send_json(session["n"])
    await socket.close()


@pytest.fixture(params=["memory", "cookie"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    yield MemorySessionStore() if request.param == "memory" else CookieSessionStore()


async def test_a_header_of_another_scheme_is_not_the_sessions(store: Any) -> None:
    """``Authorization: Basic ...`` (a browser may send it by itself) matches no
    ``HeaderTransport(scheme="Session")``: the cookie that came with it carries the session."""
    made = await request(app_with(store), "GET", "/")
    cookie = made.cookie()
    assert cookie is not None
    app = app_with(store, transport=HEADER_FIRST)
    basic = bearing("dXNlcjpwYXNz", "Basic")
    answered = await request(app, "GET", "/", headers=basic, cookies={"id": cookie.value})
    assert answered.json() == {"n": 2, "by": "CookieTransport"}
    assert answered.cookie() is not None and answered.header("session-token") is None
    token = (await request(app, "GET", "/", headers=bearing(""))).header("session-token")
    assert token
    again = await request(app, "GET", "/", headers=bearing(token, "SESSION"))  # any case
    assert again.json() == {"n": 2, "by": "HeaderTransport"}


async def test_a_bad_token_is_an_empty_session_and_never_logged(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A header that matches but does not open: an empty session, never the next transport's
    (the cookie's session, here), and the token is not logged."""
    made = await request(app_with(store), "GET", "/")
    cookie = made.cookie()
    assert cookie is not None
    app = app_with(store, transport=HEADER_FIRST)
    token = (await request(app, "GET", "/")).header("session-token")  # the header is first
    assert token
    forged = token[:-8] + ("B" * 8 if token.endswith("A" * 8) else "A" * 8)
    with caplog.at_level(logging.DEBUG, logger="sessionware"):
        answered = await request(
            app, "GET", "/", headers=bearing(forged), cookies={"id": cookie.value}
        )
    assert answered.json() == {"n": 1, "by": "HeaderTransport"}
    assert "did not open" in caplog.text
    assert forged not in caplog.text and token not in caplog.text


async def test_any_header_without_a_scheme(store: Any) -> None:
    transport = HeaderTransport(name="X-Session", scheme=None, response_header="X-Session-Next")
    app = app_with(store, transport=transport)
    made = await request(app, "GET", "/", headers=[(b"x-session", b"")])
    token = made.header("x-session-next")
    assert token and made.header("session-token") is None
    assert made.header("vary") == "X-Session"
    answered = await request(app, "GET", "/", headers=[(b"x-session", token.encode())])
    assert answered.json() == {"n": 2, "by": "HeaderTransport"}


async def test_a_semicolon_cannot_smuggle_another_cookie_into_a_token(store: Any) -> None:
    """The token is opened as the cookie it stands for: ``x; id=<token>`` would spell two."""
    app = app_with(store, transport=HeaderTransport())
    token = (await request(app, "GET", "/")).header("session-token")
    assert token
    smuggled = await request(app, "GET", "/", headers=bearing(f"x;id={token}"))
    assert smuggled.json()["n"] == 1
    percent = token.replace("/", "%2F").replace("=", "%3D")  # as the cookie carries it
    assert (await request(app, "GET", "/", headers=bearing(percent))).json()["n"] == 2


async def test_the_apps_own_vary_is_kept_and_a_star_left_alone() -> None:
    async def varied(request: Request) -> Response:
        request.session["k"] = 1
        vary = request.query_params["vary"]
        return PlainTextResponse("ok", headers={"vary": vary})

    app = Starlette(
        routes=[Route("/", varied)],
        middleware=[
            Middleware(
                SessionMiddleware, store=MemorySessionStore(), key=KEY, transport=HEADER_FIRST
            )
        ],
    )
    merged = await request(app, "GET", "/?vary=Accept-Encoding, cookie")
    assert merged.header_all("vary") == ["Accept-Encoding, cookie, Authorization"]
    star = await request(app, "GET", "/?vary=*")
    assert star.header_all("vary") == ["*"]


async def test_a_store_failure_is_an_opaque_503_that_varies_by_the_header() -> None:
    store = RecordingStore(MemorySessionStore())
    app = app_with(store, transport=HeaderTransport())
    token = (await request(app, "GET", "/")).header("session-token")
    assert token
    store.hook = Gate("get", fail=ConnectionError("down"))
    refused = await request(app, "GET", "/", headers=bearing(token))
    assert refused.status == 503 and refused.body == b""
    assert refused.header("vary") == "Authorization"


async def test_a_lazy_header_session_loads_in_the_handler() -> None:
    store = RecordingStore(MemorySessionStore())
    app = app_with(store, transport=HeaderTransport(), lazy=True)
    token = (await request(app, "GET", "/")).header("session-token")
    assert token
    store.calls.clear()
    assert (await request(app, "GET", "/", headers=bearing(token))).json()["n"] == 2
    assert store.calls[0] == "get"


async def test_a_token_the_header_cannot_hold_is_a_500() -> None:
    """The token is the cookie's value: over the size a cookie may have, it is refused too."""

    async def big(request: Request) -> Response:
        request.session["blob"] = "x" * 5000
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", big)],
        middleware=[
            Middleware(
                SessionMiddleware, store=CookieSessionStore(), key=KEY, transport=HeaderTransport()
            )
        ],
    )
    refused = await request(app, "GET", "/")
    assert refused.status == 500 and refused.header("session-token") is None


# -- WebSockets ---------------------------------------------------------------------------


async def test_a_websocket_takes_its_token_from_the_header_and_answers_on_accept(
    store: Any,
) -> None:
    app = app_with(store, transport=HeaderTransport())
    first = await websocket(app, "/ws", headers=bearing(""))
    accept = first[0]
    assert accept["type"] == "websocket.accept"
    tokens = [v for n, v in accept["headers"] if n == b"session-token"]
    assert len(tokens) == 1 and tokens[0]
    assert not [n for n, _ in accept["headers"] if n == b"set-cookie"]
    second = await websocket(app, "/ws", headers=bearing(tokens[0].decode()))
    assert second[1] == {"type": "websocket.send", "text": "2"}


# -- CSRF ------------------------------------------------------------------------------------


async def test_csrf_lets_header_requests_through_and_checks_cookie_ones() -> None:
    app = app_with(csrf=True, transport=[CookieTransport(), HeaderTransport()])
    made = await request(app, "GET", "/")  # no token: the first transport, the cookie
    cookie = made.cookie()
    assert cookie is not None
    refused = await request(app, "POST", "/", cookies={"id": cookie.value})
    assert refused.status == 403 and refused.cookie() is None
    page = await request(app, "GET", "/token", cookies={"id": cookie.value})
    cookie = page.cookie() or cookie
    allowed = await request(
        app,
        "POST",
        "/",
        cookies={"id": cookie.value},
        headers=[(b"x-csrf-token", page.text.encode())],
    )
    assert allowed.status == 200

    by_header = await request(app, "POST", "/", headers=bearing(""))
    assert by_header.status == 200 and by_header.json()["by"] == "HeaderTransport"
    token = by_header.header("session-token")
    assert token
    again = await request(app, "POST", "/", headers=bearing(token))
    assert again.status == 200 and again.json()["n"] == 2
    # The cookie comes first in this list: with both, the cookie's session is checked.
    both = await request(app, "POST", "/", headers=bearing(token), cookies={"id": cookie.value})
    assert both.status == 403


async def test_csrf_checks_a_cookie_request_that_only_names_another_scheme() -> None:
    app = app_with(csrf=True, transport=HEADER_FIRST)
    made = await request(app_with(), "GET", "/")
    cookie = made.cookie()
    assert cookie is not None
    forged = await request(
        app, "POST", "/", cookies={"id": cookie.value}, headers=bearing("x", "Basic")
    )
    assert forged.status == 403


# -- named sessions: what is refused, and the defaults kept -----------------------------------


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def test_two_middlewares_with_one_name_fail_at_the_first_request() -> None:
    inner = SessionMiddleware(_ok, name="admin", store=MemorySessionStore(), key=KEY)
    outer = SessionMiddleware(inner, name="admin", store=MemorySessionStore(), key=KEY)
    with pytest.raises(RuntimeError) as info:
        await request(outer, "GET", "/")
    message = str(info.value)
    assert "another sessionware SessionMiddleware" in message
    assert "scope['admin']" in message and "its own name=" in message
    apart = SessionMiddleware(
        SessionMiddleware(_ok, name="admin", store=MemorySessionStore(), key=KEY),
        store=MemorySessionStore(),
        key=KEY,
    )
    assert (await request(apart, "GET", "/")).status == 200


async def test_two_named_sessions_cannot_share_a_header() -> None:
    inner = SessionMiddleware(
        _ok, name="admin", store=MemorySessionStore(), key=KEY, transport=HeaderTransport()
    )
    outer = SessionMiddleware(
        inner, store=MemorySessionStore(), key=KEY, transport=HeaderTransport()
    )
    with pytest.raises(RuntimeError, match="both take the session token in the Authorization"):
        await request(outer, "GET", "/")


async def test_names_decide_the_scope_key_the_cookie_and_the_admin() -> None:
    async def both(request: Request) -> Response:
        default, admin = get_session(request), get_session(request, "admin")
        assert request.session is default is request.scope["session"]
        assert admin is request.scope["admin"] and admin is not default
        assert get_admin(request) is not get_admin(request, "admin")
        default["a"], admin["b"] = 1, 2
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/", both)],
        middleware=[
            Middleware(SessionMiddleware, store=MemorySessionStore(), key=KEY),
            Middleware(SessionMiddleware, name="admin", store=MemorySessionStore(), key=KEY),
            Middleware(
                SessionMiddleware,
                name="shop",
                cookie_name="__Host-cart",
                store=CookieSessionStore(),
                key=KEY,
            ),
        ],
    )
    response = await request(app, "GET", "/")
    assert response.status == 200, response.exception
    assert {c.name for c in response.set_cookies} == {"id", "admin"}  # shop: unused, no cookie


async def test_a_missing_named_session_says_which_middleware_to_add() -> None:
    scope = {"type": "http", "session": Session()}
    with pytest.raises(RuntimeError, match="name='admin'"):
        get_session(scope, "admin")
    with pytest.raises(RuntimeError, match="name='admin'"):
        get_admin(scope, "admin")
    assert get_session(scope) is scope["session"]


def test_construction_refuses_what_cannot_work() -> None:
    store = MemorySessionStore()
    for name in ("", "1st", "a.b", "with space", "x" * 65, 7):
        with pytest.raises(ValueError, match="a session's name"):
            SessionMiddleware(_ok, store=store, key=KEY, name=name)  # type: ignore[arg-type]
    for name in ("user", "state", "session_admin"):
        with pytest.raises(ValueError, match="already uses"):
            SessionMiddleware(_ok, store=store, key=KEY, name=name)
    with pytest.raises(NotSupportedError, match="device binding is cookie-only"):
        SessionMiddleware(
            _ok, store=store, key=KEY, transport=HeaderTransport(), device_binding=DeviceBinding()
        )
    SessionMiddleware(
        _ok, store=store, key=KEY, transport=CookieTransport(), device_binding=DeviceBinding()
    )
    with pytest.raises(ValueError, match="twice"):
        SessionMiddleware(_ok, store=store, key=KEY, transport=[CookieTransport(), COOKIE])
    with pytest.raises(ValueError, match="twice"):
        SessionMiddleware(
            _ok,
            store=store,
            key=KEY,
            transport=[HeaderTransport(), HeaderTransport(name="authorization", scheme="Bearer")],
        )
    with pytest.raises(ValueError, match="empty list"):
        SessionMiddleware(_ok, store=store, key=KEY, transport=[])
    with pytest.raises(TypeError, match="CookieTransport"):
        SessionMiddleware(_ok, store=store, key=KEY, transport="header")  # type: ignore[arg-type]


def test_header_transports_refuse_headers_that_cannot_carry_a_token() -> None:
    with pytest.raises(ValueError, match="cross-site"):
        HeaderTransport(name="Content-Type", scheme=None)
    with pytest.raises(ValueError, match="its own use"):
        HeaderTransport(name="Cookie")
    with pytest.raises(ValueError, match="its own use"):
        HeaderTransport(response_header="Set-Cookie")
    with pytest.raises(ValueError, match="not a header name"):
        HeaderTransport(name="X Session")
    with pytest.raises(ValueError, match="scheme"):
        HeaderTransport(scheme="Two words")
    assert HeaderTransport() == HeaderTransport("Authorization", "Session", "Session-Token")


def test_a_header_transport_reads_its_scheme_or_the_whole_value() -> None:
    session = HeaderTransport()
    assert session.token(b"Session abc") == b"abc"
    assert session.token(b"  sEsSiOn   abc  ") == b"abc"
    assert session.token(b"Session") == b""
    assert session.token(b"Bearer abc") is None
    assert session.token(b"Sessions abc") is None
    whole = HeaderTransport(name="X-Token", scheme=None)
    assert whole.token(b" abc ") == b"abc"
    assert whole.find([(b"authorization", b"x"), (b"x-token", b"t1"), (b"x-token", b"t2")]) == b"t1"
    assert session.find([(b"authorization", b"Basic x"), (b"authorization", b"Session y")]) == b"y"
    assert session.find([(b"x-token", b"Session y")]) is None


def test_a_standalone_session_goes_by_cookie() -> None:
    assert Session().transport == CookieTransport()


async def test_the_default_middleware_keeps_its_cookie_and_its_vary() -> None:
    app = app_with()
    made = await request(app, "GET", "/")
    cookie = made.cookie()
    assert cookie is not None and cookie.name == "id"
    assert made.header("vary") == "Cookie" and made.header("session-token") is None
    # a header transport's request header means nothing to the default middleware
    with_header = await request(app, "GET", "/", headers=bearing("x"), cookies={"id": cookie.value})
    assert with_header.json() == {"n": 2, "by": "CookieTransport"}
