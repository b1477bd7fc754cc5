"""actix-session's acceptance_test_suite (SPEC §7.1) and tests/middleware.rs (§7.3), over HTTP.

Each runs for every store and every content-security mode; ``invalidation`` is true for
server-side stores.
"""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sessionware import ContentSecurity, PersistentSession, TtlExtensionPolicy, get_session
from tests.acceptance.apps import make_app
from tests.client import RecordingStore, request

SEVEN_DAYS = int(timedelta(days=7).total_seconds())


async def _insert_counter(req: Request) -> Response:
    get_session(req).insert("counter", 100)
    return PlainTextResponse("test")


async def _show_counter(req: Request) -> Response:
    return PlainTextResponse(f"counter: {get_session(req).get('counter')}")


async def _untouched(req: Request) -> Response:
    return PlainTextResponse("untouched")


async def test_basic_workflow(store: RecordingStore, security: ContentSecurity) -> None:
    app = make_app(
        store=store,
        content_security=security,
        cookie_path="/test/",
        cookie_name="actix-test",
        cookie_domain="localhost",
        lifecycle=PersistentSession(session_ttl=timedelta(seconds=100)),
        routes=[Route("/", _insert_counter), Route("/test/", _show_counter)],
    )
    first = await request(app, "GET", "/")
    cookie = first.cookie("actix-test")
    assert cookie is not None
    assert cookie.attrs["path"] == "/test/"
    assert cookie.attrs["domain"] == "localhost"
    assert cookie.max_age == 100
    second = await request(app, "GET", "/test/", cookies={"actix-test": cookie.value})
    assert second.text == "counter: 100"


def _expiry_app(store: RecordingStore, security: ContentSecurity, policy: TtlExtensionPolicy):  # type: ignore[no-untyped-def]
    return make_app(
        store=store,
        content_security=security,
        lifecycle=PersistentSession(session_ttl=timedelta(seconds=60), ttl_extension_policy=policy),
        routes=[Route("/", _insert_counter), Route("/test/", _untouched)],
    )


async def test_expiration_is_refreshed_on_changes(
    store: RecordingStore, security: ContentSecurity
) -> None:
    app = _expiry_app(store, security, TtlExtensionPolicy.ON_STATE_CHANGES)
    first = await request(app, "GET", "/")
    cookie_1 = first.cookie()
    assert cookie_1 is not None and cookie_1.max_age == 60
    untouched = await request(app, "GET", "/test/", cookies={"id": cookie_1.value})
    assert untouched.set_cookies == []
    again = await request(app, "GET", "/", cookies={"id": cookie_1.value})
    cookie_2 = again.cookie()
    assert cookie_2 is not None and cookie_2.max_age == 60


async def test_expiration_is_always_refreshed_if_configured_to_refresh_on_every_request(
    store: RecordingStore, security: ContentSecurity
) -> None:
    app = _expiry_app(store, security, TtlExtensionPolicy.ON_EVERY_REQUEST)
    first = await request(app, "GET", "/")
    cookie_1 = first.cookie()
    assert cookie_1 is not None and cookie_1.max_age == 60
    untouched = await request(app, "GET", "/test/", cookies={"id": cookie_1.value})
    refreshed = untouched.cookie()
    assert refreshed is not None and refreshed.max_age == 60


async def test_complex_workflow(
    store: RecordingStore, security: ContentSecurity, invalidation: bool
) -> None:
    app = make_app(
        store=store,
        content_security=security,
        cookie_name="test-session",
        lifecycle=PersistentSession(session_ttl=timedelta(days=7)),
    )
    name = "test-session"
    # (1) no cookie, nothing stored
    r = await request(app, "GET", "/")
    assert r.set_cookies == []
    assert r.json() == {"user_id": None, "counter": 0}
    # (2)
    r = await request(app, "POST", "/do_something")
    assert r.json() == {"user_id": None, "counter": 1}
    cookie_1 = r.cookie(name)
    assert cookie_1 is not None and cookie_1.max_age == SEVEN_DAYS
    # (3) a read sends no cookie
    r = await request(app, "GET", "/", cookies={name: cookie_1.value})
    assert r.set_cookies == []
    assert r.json() == {"user_id": None, "counter": 1}
    # (4)
    r = await request(app, "POST", "/do_something", cookies={name: cookie_1.value})
    assert r.json() == {"user_id": None, "counter": 2}
    cookie_2 = r.cookie(name)
    assert cookie_2 is not None and cookie_2.max_age == cookie_1.max_age
    # (5) login renews the key
    r = await request(
        app, "POST", "/login", cookies={name: cookie_2.value}, json={"user_id": "ferris"}
    )
    assert r.json() == {"user_id": "ferris", "counter": 2}
    cookie_3 = r.cookie(name)
    assert cookie_3 is not None and cookie_3.value != cookie_2.value
    # (6)
    r = await request(app, "GET", "/", cookies={name: cookie_3.value})
    assert r.json() == {"user_id": "ferris", "counter": 2}
    # (7)
    r = await request(app, "POST", "/do_something", cookies={name: cookie_3.value})
    assert r.json() == {"user_id": "ferris", "counter": 3}
    # (8) the pre-login cookie
    r = await request(app, "GET", "/", cookies={name: cookie_2.value})
    if invalidation:
        assert r.set_cookies == []
        assert r.json() == {"user_id": None, "counter": 0}
    else:
        assert r.json() == {"user_id": None, "counter": 2}
    # (9) logout sends a removal cookie
    r = await request(app, "POST", "/logout", cookies={name: cookie_3.value})
    assert r.text == "Logged out: ferris"
    removal = r.cookie(name)
    assert removal is not None and removal.is_removal
    assert removal.attrs["path"] == "/"
    # (10) the browser now holds the removal cookie's empty value
    r = await request(app, "GET", "/", cookie_header=f"{name}={removal.value}")
    assert r.json() == {"user_id": None, "counter": 0}
    if invalidation:
        assert r.set_cookies == []
        # and the purged cookie itself no longer opens a session
        r = await request(app, "GET", "/", cookies={name: cookie_3.value})
        assert r.json() == {"user_id": None, "counter": 0}


async def test_guard(store: RecordingStore, security: ContentSecurity) -> None:
    app = make_app(
        store=store,
        content_security=security,
        cookie_name="test-session",
        lifecycle=PersistentSession(session_ttl=timedelta(days=7)),
    )
    name = "test-session"
    r = await request(app, "GET", "/protected/count")
    assert r.status == 404
    r = await request(app, "POST", "/login", json={"user_id": "ferris"})
    cookie_1 = r.cookie(name)
    assert cookie_1 is not None
    r = await request(app, "POST", "/do_something", cookies={name: cookie_1.value})
    assert r.json() == {"user_id": "ferris", "counter": 1}
    cookie_2 = r.cookie(name)
    assert cookie_2 is not None
    r = await request(app, "GET", "/protected/count", cookies={name: cookie_2.value})
    assert r.status == 200
    assert r.json() == {"user_id": "ferris", "counter": 1}


async def test_cookie_attributes_on_set_and_on_removal(
    store: RecordingStore, security: ContentSecurity
) -> None:
    """tests/middleware.rs cookie_storage: a browser session cookie, then its removal cookie."""
    app = make_app(
        store=store, content_security=security, cookie_path="/", cookie_domain="localhost"
    )
    r = await request(app, "POST", "/login", json={"user_id": "ferris"})
    cookie = r.cookie()
    assert cookie is not None
    assert cookie.attrs["path"] == "/" and cookie.attrs["domain"] == "localhost"
    assert "secure" in cookie.attrs and "httponly" in cookie.attrs
    assert cookie.attrs["samesite"] == "Lax"
    assert cookie.max_age is None and "expires" not in cookie.attrs
    r = await request(app, "POST", "/logout", cookies={"id": cookie.value})
    removal = r.cookie()
    assert removal is not None and removal.is_removal
    assert removal.attrs["path"] == "/" and removal.attrs["domain"] == "localhost"
    assert "secure" in removal.attrs and "httponly" in removal.attrs
    assert removal.attrs["samesite"] == "Lax"
    assert removal.attrs["expires"].endswith("GMT")
