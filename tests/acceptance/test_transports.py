"""The session token in a header (``HeaderTransport``), a list of transports, and several named
sessions in one app: over HTTP, for every store (issue 26, items 1 and 2)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionware import (
    CookieTransport,
    HeaderTransport,
    Key,
    PersistentSession,
    SessionMiddleware,
    get_admin,
    get_session,
)
from tests.acceptance.apps import make_app
from tests.client import RecordingStore, request

Headers = list[tuple[bytes, bytes]]
COOKIE_FIRST = [CookieTransport(), HeaderTransport()]
HEADER_FIRST = [HeaderTransport(), CookieTransport()]


def bearing(token: str, scheme: str = "Session") -> Headers:
    """The request header that carries ``token`` (``""``: the header without a token)."""
    return [(b"authorization", f"{scheme} {token}".strip().encode("latin-1"))]


async def counted(app: Any, **options: Any) -> tuple[int, Any]:
    """POST /do_something (the counter) and what it answered."""
    response = await request(app, "POST", "/do_something", **options)
    assert response.status == 200, response.text
    return response.json()["counter"], response


async def test_a_header_session_lives_renews_and_ends_by_its_token(
    store: RecordingStore, invalidation: bool
) -> None:
    app = make_app(store=store, transport=HeaderTransport())
    n, first = await counted(app, headers=bearing(""))  # "I speak headers; no session yet"
    token = first.header("session-token")
    assert n == 1 and token, first.headers
    assert first.set_cookies == []
    assert first.header("vary") == "Authorization"
    assert first.header("cache-control") == "private"

    n, second = await counted(app, headers=bearing(token))
    assert n == 2 and second.header("vary") == "Authorization"
    if invalidation:  # the key did not change: the client keeps the token it has
        assert second.header("session-token") is None
    else:  # the cookie store's token carries the state: a new one for every change
        token = second.header("session-token")
        assert token
    assert second.set_cookies == []

    login = await request(app, "POST", "/login", json={"user_id": "ada"}, headers=bearing(token))
    renewed = login.header("session-token")
    assert renewed and renewed != token
    assert (await request(app, "GET", "/", headers=bearing(renewed))).json() == {
        "user_id": "ada",
        "counter": 2,
    }

    logout = await request(app, "POST", "/logout", headers=bearing(renewed))
    assert logout.text == "Logged out: ada"
    assert logout.header("session-token") == ""  # the client drops it
    after = (await request(app, "GET", "/", headers=bearing(renewed))).json()
    if invalidation:
        assert after == {"user_id": None, "counter": 0}


async def test_the_token_is_the_value_the_cookie_carries(store: RecordingStore) -> None:
    """Same key ring, same format: a cookie's value opens as a token and a token as a cookie."""
    key = Key.generate()
    by_cookie = make_app(store=store, key=key)
    by_header = make_app(store=store, key=key, transport=HeaderTransport())
    _, made = await counted(by_cookie)
    cookie = made.cookie()
    assert cookie is not None
    n, answered = await counted(by_header, headers=bearing(cookie.value))  # percent-encoded
    assert n == 2
    token = answered.header("session-token") or cookie.value
    n, _ = await counted(by_cookie, cookies={"id": token})
    assert n == 3


async def test_the_first_transport_the_request_matches_carries_its_session(
    store: RecordingStore,
) -> None:
    """A request with the session cookie and the header: the transports' order decides."""
    key = Key.generate()
    cookie_first = make_app(store=store, key=key, transport=COOKIE_FIRST)
    header_first = make_app(store=store, key=key, transport=HEADER_FIRST)
    _, one = await counted(cookie_first)  # no token at all: the first transport, the cookie
    cookie = one.cookie()
    assert cookie is not None and one.header("session-token") is None
    for _ in range(2):
        _, two = await counted(header_first)  # no token at all: the first transport, the header
    token = two.header("session-token")
    assert token and two.set_cookies == []
    both: dict[str, Any] = {"cookies": {"id": cookie.value}, "headers": bearing(token)}

    n, by_cookie = await counted(cookie_first, **both)
    assert n == 2  # the cookie's session (1 before)
    assert by_cookie.header("session-token") is None
    assert by_cookie.header("vary") == "Cookie, Authorization"
    n, by_header = await counted(header_first, **both)
    assert n == 2  # the header's session (1 before)
    assert by_header.set_cookies == []
    assert by_header.header("vary") == "Authorization, Cookie"


# -- named sessions -------------------------------------------------------------------------


async def count_both(request: Request) -> Response:
    """Counts in the default session (``request.session``) and, with ``?admin``, the admin's."""
    default, admin = request.session, get_session(request, "admin")
    await default.load()
    await admin.load()
    default["n"] = default.get("n", 0) + 1
    if "admin" in request.query_params:
        admin["n"] = admin.get("n", 0) + 1
    assert get_admin(request) is not get_admin(request, "admin")
    return JSONResponse({"session": dict(default), "admin": dict(admin)})


def named_app(store: Any, **admin: Any) -> Starlette:
    """The default session and one named ``admin`` (its own key and lifetime, ``admin``
    options on top), both in ``store``."""
    return Starlette(
        routes=[Route("/", count_both)],
        middleware=[
            Middleware(SessionMiddleware, store=store, key=Key.generate()),
            Middleware(
                SessionMiddleware,
                name="admin",
                store=store,
                key=Key.generate(),
                lifecycle=PersistentSession(),
                **admin,
            ),
        ],
    )


async def test_named_sessions_keep_apart(store: RecordingStore) -> None:
    app = named_app(store)
    first = await request(app, "GET", "/")
    assert first.json() == {"session": {"n": 1}, "admin": {}}
    own = first.cookie("id")
    assert own is not None and own.max_age is None and first.cookie("admin") is None
    second = await request(app, "GET", "/?admin", cookies={"id": own.value})
    assert second.json() == {"session": {"n": 2}, "admin": {"n": 1}}
    admin = second.cookie("admin")
    assert admin is not None and admin.max_age == 86400  # its own lifecycle
    own = second.cookie("id") or own  # the cookie store's carries the state: a new one
    both = {"id": own.value, "admin": admin.value}
    assert (await request(app, "GET", "/?admin", cookies=both)).json() == {
        "session": {"n": 3},
        "admin": {"n": 2},
    }
    swapped = {"id": admin.value, "admin": own.value}  # neither opens under the other's name
    assert (await request(app, "GET", "/", cookies=swapped)).json() == {
        "session": {"n": 1},
        "admin": {},
    }


async def test_a_named_session_by_header_beside_the_cookie_session(store: RecordingStore) -> None:
    transport = HeaderTransport(name="X-Admin", scheme=None, response_header="X-Admin-Token")
    app = named_app(store, transport=transport)
    first = await request(app, "GET", "/?admin", headers=[(b"x-admin", b"")])
    own, token = first.cookie("id"), first.header("x-admin-token")
    assert own is not None and token and first.cookie("admin") is None
    second = await request(
        app, "GET", "/?admin", cookies={"id": own.value}, headers=[(b"x-admin", token.encode())]
    )
    assert second.json() == {"session": {"n": 2}, "admin": {"n": 2}}
    assert second.header("vary") == "X-Admin, Cookie"  # each middleware names its own
