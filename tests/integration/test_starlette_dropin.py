"""sessionware.integrations.starlette.SessionMiddleware: Starlette's parameters and meanings."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from datetime import timedelta
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sessionware import (
    ContentSecurity,
    Key,
    PersistentSession,
    Session,
    SessionAdopted,
    SessionEvent,
    SessionStatus,
    get_session,
)
from sessionware.integrations.starlette import SessionMiddleware, derive_key
from sessionware.stores import CookieSessionStore, MemorySessionStore
from tests.client import RecordingStore, Response, request

SECRET = "7f0c1e6b2d-not-a-real-secret-but-long-enough-for-a-test"
OTHER_SECRET = "a different secret, just as long as the first one is"


async def view(request: Request) -> JSONResponse:
    assert get_session(request) is request.session  # sessionware's helpers see the same session
    return JSONResponse(dict(request.session))


async def update(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse(dict(request.session))


async def clear(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse(dict(request.session))


async def append_to_cart(request: Request) -> JSONResponse:
    request.session["cart"].append(request.path_params["item"])  # in place, no __setitem__
    return JSONResponse(dict(request.session))


async def set_then_delete(request: Request) -> JSONResponse:
    request.session["x"] = 1
    del request.session["x"]
    return JSONResponse(dict(request.session))


async def starlette_operations(request: Request) -> JSONResponse:
    """What Starlette users write, on a session loaded as {"a": 1, "b": 2, "c": 3}."""
    s = request.session
    results = {
        "item": s["a"],
        "get": s.get("a"),
        "get_missing": s.get("missing", "default"),
        "in": "b" in s,
        "len": len(s),
    }
    s["d"] = 4
    s.update({"e": 5}, f=6)
    s |= {"g": 7}
    results["pop"] = s.pop("a")
    results["pop_missing"] = s.pop("missing", None)
    results["popitem"] = list(s.popitem())
    results["setdefault_new"] = s.setdefault("h", 8)
    results["setdefault_existing"] = s.setdefault("b", 99)
    del s["c"]
    results["keys"] = sorted(s.keys())
    results["equal"] = s == {"b": 2, "d": 4, "e": 5, "f": 6, "h": 8}
    return JSONResponse(results)


async def session_as_json(request: Request) -> JSONResponse:
    return JSONResponse({"session": request.session, "is_dict": isinstance(request.session, dict)})


ROUTES = [
    Route("/view", view),
    Route("/update", update, methods=["POST"]),
    Route("/clear", clear, methods=["POST"]),
    Route("/cart/{item}", append_to_cart, methods=["POST"]),
    Route("/set_then_delete", set_then_delete, methods=["POST"]),
    Route("/operations", starlette_operations, methods=["POST"]),
    Route("/json", session_as_json),
]


def make_app(secret_key: Any = SECRET, **options: Any) -> Starlette:
    return Starlette(
        routes=ROUTES, middleware=[Middleware(SessionMiddleware, secret_key=secret_key, **options)]
    )


def cookie_of(response: Response) -> str:
    found = response.cookie("session")
    assert found is not None, response.headers
    return found.value


async def start(app: Any, data: dict[str, Any]) -> str:
    """A session holding ``data``; returns its cookie value."""
    response = await request(app, "POST", "/update", json=data)
    assert response.status == 200, response.body
    return cookie_of(response)


async def test_defaults_are_starlettes() -> None:
    app = make_app()
    response = await request(app, "POST", "/update", json={"some": "data"})
    cookie = response.cookie("session")
    assert cookie is not None
    # Starlette's attribute order and spelling; no Secure, Domain or Partitioned by default.
    assert cookie.line.split("; ")[1:] == ["path=/", "Max-Age=1209600", "httponly", "samesite=lax"]
    assert response.header("vary") == "Cookie"
    again = await request(app, "GET", "/view", cookies={"session": cookie.value})
    assert again.json() == {"some": "data"}


async def test_max_age_none_is_a_browser_session() -> None:
    app = make_app(max_age=None)
    response = await request(app, "POST", "/update", json={"some": "data"})
    cookie = response.cookie("session")
    assert cookie is not None
    assert "max-age" not in cookie.attrs
    assert "expires" not in cookie.attrs
    again = await request(app, "GET", "/view", cookies={"session": cookie.value})
    assert again.json() == {"some": "data"}


async def test_every_starlette_parameter_reaches_the_cookie() -> None:
    app = make_app(
        session_cookie="sid",
        max_age=60,
        path="/app",
        same_site="none",
        https_only=True,
        domain="example.com",
        partitioned=True,
    )
    response = await request(app, "POST", "/update", json={"some": "data"})
    cookie = response.cookie("sid")
    assert cookie is not None
    assert response.cookie("session") is None
    assert cookie.line.split("; ")[1:] == [
        "path=/app",
        "Max-Age=60",
        "httponly",
        "samesite=none",
        "secure",
        "domain=example.com",
        "partitioned",
    ]
    cleared = await request(app, "POST", "/clear", cookies={"sid": cookie.value})
    removal = cleared.cookie("sid")
    assert removal is not None and removal.is_removal
    assert removal.line.split("; ")[1:3] == ["path=/app", "Max-Age=0"]
    assert removal.line.split("; ")[4:] == [
        "httponly",
        "samesite=none",
        "secure",
        "domain=example.com",
        "partitioned",
    ]


async def test_secret_key_may_be_a_starlette_secret() -> None:
    value = await start(make_app(secret_key=Secret(SECRET)), {"k": "v"})
    response = await request(
        make_app(secret_key=SECRET), "GET", "/view", cookies={"session": value}
    )
    assert response.json() == {"k": "v"}


async def test_the_same_secret_reads_another_instances_cookies_a_different_one_does_not() -> None:
    value = await start(make_app(), {"k": "v"})
    same = await request(make_app(), "GET", "/view", cookies={"session": value})
    assert same.json() == {"k": "v"}
    other = await request(
        make_app(secret_key=OTHER_SECRET), "GET", "/view", cookies={"session": value}
    )
    assert other.status == 200
    assert other.json() == {}
    assert other.cookie("session") is None


def test_key_derivation_is_the_documented_one() -> None:
    expected = Key.derive_from(
        hashlib.sha256(b"sessionware starlette drop-in\x00" + SECRET.encode("utf-8")).digest()
    )
    assert derive_key(SECRET) == expected
    assert derive_key(Secret(SECRET)) == expected
    assert derive_key(OTHER_SECRET) != expected
    key = Key.generate()
    assert derive_key(key) is key
    with pytest.raises(ValueError, match="empty"):
        derive_key("")
    with pytest.raises(TypeError, match="bytes"):
        derive_key(SECRET.encode())  # type: ignore[arg-type]


async def test_a_sessionware_key_is_accepted_as_secret_key() -> None:
    key = Key.generate()
    value = await start(make_app(secret_key=key), {"k": "v"})
    response = await request(make_app(secret_key=key), "GET", "/view", cookies={"session": value})
    assert response.json() == {"k": "v"}


async def test_nested_mutation_is_saved() -> None:
    app = make_app()
    value = await start(app, {"cart": ["apple"]})
    response = await request(app, "POST", "/cart/pear", cookies={"session": value})
    assert response.json() == {"cart": ["apple", "pear"]}
    again = await request(app, "GET", "/view", cookies={"session": cookie_of(response)})
    assert again.json() == {"cart": ["apple", "pear"]}


async def test_reading_sends_no_cookie_but_varies() -> None:
    """ON_STATE_CHANGES, as Starlette 1.x: the cookie goes out only when the session changed."""
    app = make_app()
    value = await start(app, {"k": "v"})
    response = await request(app, "GET", "/view", cookies={"session": value})
    assert response.json() == {"k": "v"}
    assert response.cookie("session") is None
    assert response.header("vary") == "Cookie"


async def test_starlette_operations_behave_and_persist() -> None:
    app = make_app()
    value = await start(app, {"a": 1, "b": 2, "c": 3})
    response = await request(app, "POST", "/operations", cookies={"session": value})
    assert response.json() == {
        "item": 1,
        "get": 1,
        "get_missing": "default",
        "in": True,
        "len": 3,
        "pop": 1,
        "pop_missing": None,
        "popitem": ["g", 7],
        "setdefault_new": 8,
        "setdefault_existing": 2,
        "keys": ["b", "d", "e", "f", "h"],
        "equal": True,
    }
    again = await request(app, "GET", "/view", cookies={"session": cookie_of(response)})
    assert again.json() == {"b": 2, "d": 4, "e": 5, "f": 6, "h": 8}


async def test_clear_ends_the_session_as_starlettes_does() -> None:
    store = RecordingStore(MemorySessionStore())
    app = make_app(store=store)
    value = await start(app, {"user": "ann"})
    response = await request(app, "POST", "/clear", cookies={"session": value})
    removal = response.cookie("session")
    assert removal is not None and removal.is_removal
    assert store.calls[-1] == "put"
    replay = await request(app, "GET", "/view", cookies={"session": value})
    assert replay.json() == {}


async def test_emptying_a_new_session_sends_nothing() -> None:
    response = await request(make_app(), "POST", "/set_then_delete")
    assert response.json() == {}
    assert response.cookie("session") is None


async def test_expired_cookie_opens_empty() -> None:
    """Starlette's test_session_expires, with a clock instead of max_age=-1."""
    now = [1_000_000.0]

    def clock() -> float:
        return now[0]

    app = make_app(max_age=60, store=CookieSessionStore(), clock=clock)
    value = await start(app, {"k": "v"})
    now[0] += 59
    assert (await request(app, "GET", "/view", cookies={"session": value})).json() == {"k": "v"}
    now[0] += 2
    assert (await request(app, "GET", "/view", cookies={"session": value})).json() == {}


async def test_rotation_with_fallback_secret_keys() -> None:
    old_value = await start(make_app(secret_key=OTHER_SECRET), {"k": "v"})
    rotated = make_app(secret_key=SECRET, fallback_secret_keys=[Secret(OTHER_SECRET)])
    response = await request(rotated, "GET", "/view", cookies={"session": old_value})
    assert response.json() == {"k": "v"}
    reissued = cookie_of(response)  # sealed again under the current secret
    new_only = make_app(secret_key=SECRET)
    assert (await request(new_only, "GET", "/view", cookies={"session": old_value})).json() == {}
    assert (await request(new_only, "GET", "/view", cookies={"session": reissued})).json() == {
        "k": "v"
    }


@pytest.mark.parametrize(
    ("max_age", "error"),
    [("60", TypeError), (1.5, TypeError), (True, TypeError)],
)
def test_max_age_must_be_whole_seconds(max_age: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_age"):
        SessionMiddleware(view, SECRET, max_age=max_age)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "parameter"),
    [
        ("key", "secret_key"),
        ("keys", "secret_key"),
        ("cookie_name", "session_cookie"),
        ("cookie_secure", "https_only"),
        ("cookie_same_site", "same_site"),
        ("cookie_path", "path"),
        ("cookie_domain", "domain"),
        ("cookie_partitioned", "partitioned"),
    ],
)
def test_options_a_starlette_parameter_sets_are_refused(option: str, parameter: str) -> None:
    with pytest.raises(TypeError, match=parameter):
        SessionMiddleware(view, SECRET, **{option: None})  # type: ignore[arg-type]


def test_fallback_secret_keys_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="list"):
        SessionMiddleware(view, SECRET, fallback_secret_keys=OTHER_SECRET)  # type: ignore[arg-type]


def test_same_site_none_needs_https_only() -> None:
    """Starlette sends such a cookie and browsers drop it; sessionware says so at startup."""
    with pytest.raises(ValueError, match="cookie_secure"):
        SessionMiddleware(view, SECRET, same_site="none")  # type: ignore[arg-type]


async def test_sessionware_options_pass_through() -> None:
    app = make_app(
        content_security=ContentSecurity.SIGNED,
        lifecycle=PersistentSession(session_ttl=timedelta(hours=1)),
        cookie_http_only=False,
    )
    response = await request(app, "POST", "/update", json={"k": "v"})
    cookie = response.cookie("session")
    assert cookie is not None
    value = unquote(cookie.value)[43:]  # signed, not encrypted: b64url(mac) then b64url(value)
    assert '"state":{"k":"v"}' in base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    assert cookie.line.split("; ")[1:] == ["path=/", "Max-Age=3600", "samesite=lax"]
    again = await request(app, "GET", "/view", cookies={"session": cookie.value})
    assert again.json() == {"k": "v"}


@pytest.mark.parametrize(
    ("operation", "changed"),
    [
        (lambda s: s.__setitem__("c", "3"), True),
        (lambda s: s.__delitem__("a"), True),
        (lambda s: s.clear(), True),
        (lambda s: s.pop("a"), True),
        (lambda s: s.pop("missing", None), False),
        (lambda s: s.setdefault("c", "3"), True),
        (lambda s: s.setdefault("a", "2"), False),
        (lambda s: s.update({"c": "3"}), True),
        (lambda s: s.popitem(), True),
    ],
)
def test_modification_tracking_matches_starlette(
    operation: Callable[[Session], object], changed: bool
) -> None:
    """Starlette's test_session_tracks_modification, read through ``status``.

    One difference: ``pop("missing", None)`` counts as an access here (the response then depends
    on the cookie, so it must vary by it); Starlette's Session does not count it.
    """
    session = Session({"a": "1", "b": "2"})
    operation(session)
    assert (session.status is SessionStatus.CHANGED) is changed


async def test_json_response_of_session() -> None:
    app = make_app()
    value = await start(app, {"k": "v"})
    response = await request(app, "GET", "/json", cookies={"session": value})
    if response.exception is not None:
        raise response.exception
    assert response.json() == {"session": {"k": "v"}, "is_dict": True}
    assert response.header("vary") == "Cookie"  # serialising the session counts as reading it


# -- a guessable secret_key (issue 16 item 9) ------------------------------------------------


async def bare(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    pass


@pytest.mark.parametrize("secret", ["dev-secret", Secret("x" * 31), "é" * 15])
def test_a_short_secret_key_logs_one_warning(
    secret: str | Secret, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="sessionware"):
        SessionMiddleware(bare, secret_key=secret)  # type: ignore[arg-type]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, caplog.text
    message = warnings[0].getMessage()
    assert "shorter than 32" in message and "token_hex" in message
    assert str(secret) not in message  # the secret itself is never logged


@pytest.mark.parametrize("secret", [SECRET, "x" * 32, Key.generate()])
def test_a_long_secret_key_logs_nothing(
    secret: str | Key, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG", logger="sessionware"):
        SessionMiddleware(bare, secret_key=secret)  # type: ignore[arg-type]
    assert caplog.records == []


# -- Starlette's own cookies carry over (issue 27.1) -------------------------------------------


def starlettes_app(secret: str = SECRET, **options: Any) -> Starlette:
    """The app before the switch: Starlette's own SessionMiddleware."""
    from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware

    return Starlette(
        routes=ROUTES,
        middleware=[Middleware(StarletteSessionMiddleware, secret_key=secret, **options)],
    )


async def starlette_signed_in(jar: CookieJar, state: dict[str, Any], **options: Any) -> str:
    """The user signs in before the switch; the cookie Starlette set is in ``jar``."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(starlettes_app(**options)),
        base_url="http://testserver",
        cookies=jar,
    ) as browser:
        assert (await browser.post("/update", json=state)).status_code == 200
    name = options.get("session_cookie", "session")
    return next(c.value or "" for c in jar if c.name == name)


def browser(app: Any, jar: CookieJar) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://testserver", cookies=jar
    )


@pytest.mark.parametrize("store", [None, MemorySessionStore], ids=["cookie", "memory"])
async def test_starlettes_cookie_carries_over_by_default(store: Any) -> None:
    jar, events = CookieJar(), list[SessionEvent]()
    old = await starlette_signed_in(jar, {"user": "ada", "cart": [1]})
    options = {} if store is None else {"store": store()}
    app = make_app(on_event=events.append, **options)
    async with browser(app, jar) as client:
        first = await client.get("/view")
        assert first.json() == {"user": "ada", "cart": [1]}
        lines = first.headers.get_list("set-cookie")
        assert len(lines) == 1 and lines[0].startswith("session=") and "Max-Age=1209600" in lines[0]
        new = next(c.value for c in jar if c.name == "session")
        assert new != old, "sessionware's cookie replaced Starlette's (no removal line)"
        assert events.count(SessionAdopted("starlette", "adopted")) == 1

        second = await client.get("/view")
        assert second.json() == {"user": "ada", "cart": [1]}
        assert second.headers.get_list("set-cookie") == []
        assert len([e for e in events if isinstance(e, SessionAdopted)]) == 1, "not again"


async def test_the_default_reads_fallback_secrets_and_starlettes_settings() -> None:
    jar = CookieJar()
    await starlette_signed_in(jar, {"k": "v"}, secret=OTHER_SECRET, session_cookie="sid")
    app = make_app(fallback_secret_keys=[OTHER_SECRET], session_cookie="sid")
    async with browser(app, jar) as client:
        assert (await client.get("/view")).json() == {"k": "v"}
        assert (await client.get("/view")).json() == {"k": "v"}


@pytest.mark.parametrize("bad", ["wrong_key", "tampered", "expired"])
async def test_a_bad_starlette_cookie_is_an_empty_session_and_removed(bad: str) -> None:
    jar, events = CookieJar(), list[SessionEvent]()
    secret = OTHER_SECRET if bad == "wrong_key" else SECRET
    old = await starlette_signed_in(jar, {"k": "v"}, secret=secret, max_age=60)
    if bad == "tampered":
        cookie = next(c for c in jar if c.name == "session")
        cookie.value = "eyJrIjogIngifQ==" + old[old.index(".") :]  # {"k": "x"}, same signature
    clock = (lambda: time.time() + 61) if bad == "expired" else time.time
    app = make_app(max_age=60, clock=clock, on_event=events.append)
    async with browser(app, jar) as client:
        response = await client.get("/view")
    assert response.status_code == 200 and response.json() == {}
    (line,) = response.headers.get_list("set-cookie")
    assert line.startswith("session=; path=/; Max-Age=0"), line  # Starlette's spelling
    assert [c.name for c in jar] == []
    outcome = "expired" if bad == "expired" else "forged"
    assert events == [SessionAdopted("starlette", outcome)]


async def test_adopt_empty_reads_no_starlette_cookie(caplog: pytest.LogCaptureFixture) -> None:
    jar = CookieJar()
    await starlette_signed_in(jar, {"k": "v"})
    async with browser(make_app(adopt=[]), jar) as client:
        response = await client.get("/view")
    assert response.json() == {} and response.headers.get_list("set-cookie") == []
    assert "did not open" in caplog.text  # as before issue 27: ignored, left in place


async def test_a_sessionware_key_as_secret_adopts_nothing() -> None:
    """Starlette never had a sessionware ``Key``: there is no Starlette cookie to read."""
    middleware = SessionMiddleware(bare, secret_key=Key.generate())
    assert type(middleware.engine).__name__ == "ClientSideEngine"


async def test_a_cookie_whose_name_ends_in_the_sessions_is_not_it() -> None:
    """``mysession=`` holds ``session=``: neither read, adopted nor removed."""
    value = await start(make_app(), {"k": "v"})
    header = f"mysession=eyJrIjogInYifQ==.aBcD.eFgH; session={value}"
    response = await request(make_app(), "GET", "/view", cookie_header=header)
    assert response.json() == {"k": "v"} and response.set_cookies == []
    alone = await request(make_app(), "GET", "/view", cookie_header="mysession=eyJ9.aBcD.eFgH")
    assert alone.json() == {} and alone.set_cookies == []
