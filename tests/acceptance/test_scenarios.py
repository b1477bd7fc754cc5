"""Scenarios from the Python peers' suites (ANCHORS.md §4), over HTTP, for every store and mode."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from sessionware import (
    BrowserSession,
    ContentSecurity,
    Key,
    PersistentSession,
    SessionMiddleware,
    TtlExtensionPolicy,
)
from sessionware.crypto import seal, unseal
from sessionware.stores import CookieSessionStore, generate_session_key
from tests.acceptance.apps import make_app
from tests.client import RecordingStore, request, websocket
from tests.client import stored as stored_state


def opened_key(key: Key, security: ContentSecurity, value: str, name: str = "id") -> str:
    """The session key (or cookie state) inside a Set-Cookie value."""
    result = unseal(security, [key], name, unquote(value))
    assert result is not None
    return result[0]


async def test_round_trip(store: RecordingStore, security: ContentSecurity) -> None:
    app = make_app(store=store, content_security=security)
    assert (await request(app, "GET", "/all")).json() == {}
    r = await request(app, "POST", "/set", json={"k": "v", "nested": {"a": [1, 2]}})
    cookie = r.cookie()
    assert cookie is not None
    r = await request(app, "GET", "/all", cookies={"id": cookie.value})
    assert r.json() == {"k": "v", "nested": {"a": [1, 2]}}
    r = await request(app, "POST", "/clear", cookies={"id": cookie.value})
    cleared = r.cookie()
    assert cleared is not None
    r = await request(app, "GET", "/all", cookies={"id": cleared.value})
    assert r.json() == {}


async def test_untouched_session_sends_nothing_and_stores_nothing(
    store: RecordingStore, security: ContentSecurity
) -> None:
    app = make_app(store=store, content_security=security)
    r = await request(app, "GET", "/untouched")
    assert r.set_cookies == [] and r.header("vary") is None
    assert store.calls == []
    r = await request(app, "GET", "/")  # reads, writes nothing
    assert r.set_cookies == [] and r.header("vary") == "Cookie"
    assert store.calls == []


async def test_read_only_access_does_not_reissue_or_write(
    store: RecordingStore, security: ContentSecurity
) -> None:
    app = make_app(store=store, content_security=security)
    cookie = (await request(app, "POST", "/set", json={"k": "v"})).cookie()
    assert cookie is not None
    store.calls.clear()
    r = await request(app, "GET", "/all", cookies={"id": cookie.value})
    assert r.json() == {"k": "v"} and r.set_cookies == []
    assert store.writes == []


async def test_vary_cookie(store: RecordingStore, security: ContentSecurity) -> None:
    app = make_app(store=store, content_security=security)
    r = await request(app, "GET", "/contains")
    assert r.header_all("vary") == ["Cookie"]
    r = await request(app, "POST", "/own-cookie")
    assert r.header_all("vary") == ["Accept-Encoding, Accept-Language, Cookie"]
    assert r.header("cache-control") == "private"


async def test_handler_cookies_are_kept(store: RecordingStore, security: ContentSecurity) -> None:
    app = make_app(store=store, content_security=security)
    r = await request(app, "POST", "/own-cookie")
    assert r.cookie("foo") is not None and r.cookie("foo").value == "bar"  # type: ignore[union-attr]
    assert r.cookie("id") is not None


async def test_key_rotation(store: RecordingStore, security: ContentSecurity) -> None:
    old, new = Key.generate(), Key.generate()
    issued = (
        await request(
            make_app(store=store, content_security=security, key=old),
            "POST",
            "/set",
            json={"k": "v"},
        )
    ).cookie()
    assert issued is not None
    rotated = make_app(store=store, content_security=security, keys=[new, old])
    r = await request(rotated, "GET", "/all", cookies={"id": issued.value})
    assert r.json() == {"k": "v"}
    reissued = r.cookie()
    assert reissued is not None, (
        "a cookie opened with an old key is re-issued under the current one"
    )
    assert unseal(security, [new], "id", unquote(reissued.value)) is not None
    only_new = make_app(store=store, content_security=security, key=new)
    assert (await request(only_new, "GET", "/all", cookies={"id": issued.value})).json() == {}
    assert (await request(only_new, "GET", "/all", cookies={"id": reissued.value})).json() == {
        "k": "v"
    }


async def test_absolute_timeout(store: RecordingStore, security: ContentSecurity) -> None:
    now = [time.time()]
    app = make_app(
        store=store,
        content_security=security,
        lifecycle=BrowserSession(max_age=timedelta(hours=1)),
        clock=lambda: now[0],
    )
    cookie = (await request(app, "POST", "/set", json={"k": "v"})).cookie()
    assert cookie is not None
    now[0] += 1800
    r = await request(app, "POST", "/set", cookies={"id": cookie.value}, json={"k2": "v2"})
    assert r.json() == {"k": "v", "k2": "v2"}
    cookie = r.cookie()
    assert cookie is not None
    now[0] += 1801  # activity does not extend an absolute timeout
    assert (await request(app, "GET", "/all", cookies={"id": cookie.value})).json() == {}


async def test_persistent_and_browser_cookies(
    store: RecordingStore, security: ContentSecurity
) -> None:
    browser = make_app(store=store, content_security=security)
    cookie = (await request(browser, "POST", "/set", json={"k": 1})).cookie()
    assert cookie is not None and cookie.max_age is None and "expires" not in cookie.attrs
    persistent = make_app(
        store=store,
        content_security=security,
        lifecycle=PersistentSession(session_ttl=timedelta(hours=3)),
    )
    cookie = (await request(persistent, "POST", "/set", json={"k": 1})).cookie()
    assert cookie is not None and cookie.max_age == 3 * 3600


@pytest.mark.parametrize("same_site", ["strict", "none"])
async def test_custom_attributes_on_set_and_removal(
    store: RecordingStore, security: ContentSecurity, same_site: Any
) -> None:
    app = make_app(
        store=store,
        content_security=security,
        cookie_name="sid",
        cookie_domain="example.com",
        cookie_path="/",
        cookie_http_only=False,
        cookie_same_site=same_site,
        cookie_partitioned=True,
    )
    cookie = (await request(app, "POST", "/set", json={"user_id": "u"})).cookie("sid")
    assert cookie is not None
    removal = (await request(app, "POST", "/purge", cookies={"sid": cookie.value})).cookie("sid")
    assert removal is not None and removal.is_removal
    for c in (cookie, removal):
        assert c.attrs["domain"] == "example.com" and c.attrs["path"] == "/"
        assert c.attrs["samesite"] == same_site.capitalize()
        assert "httponly" not in c.attrs and "secure" in c.attrs and "partitioned" in c.attrs


async def test_cookie_path_scoping(store: RecordingStore, security: ContentSecurity) -> None:
    app = make_app(store=store, content_security=security, cookie_path="/admin")
    cookie = (await request(app, "POST", "/set", json={"k": 1})).cookie()
    assert cookie is not None and cookie.attrs["path"] == "/admin"


async def test_purge_without_prior_cookie_sends_nothing(
    store: RecordingStore, security: ContentSecurity
) -> None:
    app = make_app(store=store, content_security=security)
    r = await request(app, "POST", "/purge")
    assert r.set_cookies == [] and store.calls == []
    r = await request(app, "POST", "/renew")
    assert r.set_cookies == [] and store.calls == []


async def test_purge_deletes_the_record(
    store: RecordingStore, security: ContentSecurity, invalidation: bool
) -> None:
    key = Key.generate()
    app = make_app(store=store, content_security=security, key=key)
    cookie = (await request(app, "POST", "/set", json={"user_id": "u"})).cookie()
    assert cookie is not None
    r = await request(app, "POST", "/purge", cookies={"id": cookie.value})
    assert r.cookie() is not None and r.cookie().is_removal  # type: ignore[union-attr]
    if invalidation:
        stored = opened_key(key, security, cookie.value)
        assert await stored_state(store, stored) is None
        assert (await request(app, "GET", "/all", cookies={"id": cookie.value})).json() == {}


async def test_unknown_valid_key_is_never_adopted(
    store: RecordingStore, security: ContentSecurity, invalidation: bool
) -> None:
    key = Key.generate()
    app = make_app(store=store, content_security=security, key=key)
    if not invalidation:
        # The cookie store's key is the state: forging one takes the app's key.
        forged_state = '{"v":1,"state":{"user_id":"admin"}}'
        cookie_value = seal(security, Key.generate(), "id", forged_state)
        r = await request(app, "POST", "/set", cookies={"id": cookie_value}, json={"k": "v"})
        assert r.json() == {"k": "v"}
        return
    forged = generate_session_key()
    cookie_value = seal(security, key, "id", forged)
    r = await request(app, "POST", "/set", cookies={"id": cookie_value}, json={"k": "v"})
    issued = r.cookie()
    assert issued is not None
    assert opened_key(key, security, issued.value) != forged
    assert await stored_state(store, forged) is None
    assert store.calls.count("put") == 1, "only the new session was written"


async def test_renew_gives_new_key_keeps_data_drops_old(
    store: RecordingStore, security: ContentSecurity, invalidation: bool
) -> None:
    key = Key.generate()
    app = make_app(store=store, content_security=security, key=key)
    before = (await request(app, "POST", "/set", json={"cart": ["x"]})).cookie()
    assert before is not None
    r = await request(app, "POST", "/login", cookies={"id": before.value}, json={"user_id": "u"})
    after = r.cookie()
    assert after is not None
    assert opened_key(key, security, after.value) != opened_key(key, security, before.value)
    assert (await request(app, "GET", "/all", cookies={"id": after.value})).json() == {
        "cart": ["x"],
        "user_id": "u",
    }
    if invalidation:
        assert (await request(app, "GET", "/all", cookies={"id": before.value})).json() == {}


async def test_replay_after_logout_gets_a_fresh_key(
    store: RecordingStore, security: ContentSecurity, invalidation: bool
) -> None:
    key = Key.generate()
    app = make_app(store=store, content_security=security, key=key)
    stolen = (await request(app, "POST", "/login", json={"user_id": "u"})).cookie()
    assert stolen is not None
    await request(app, "POST", "/logout", cookies={"id": stolen.value})
    r = await request(app, "POST", "/do_something", cookies={"id": stolen.value})
    fresh = r.cookie()
    assert fresh is not None
    if invalidation:
        assert r.json() == {"user_id": None, "counter": 1}
        assert opened_key(key, security, fresh.value) != opened_key(key, security, stolen.value)


async def test_on_every_request_only_extends(
    store: RecordingStore, security: ContentSecurity
) -> None:
    app = make_app(
        store=store,
        content_security=security,
        lifecycle=BrowserSession(state_ttl_extension_policy=TtlExtensionPolicy.ON_EVERY_REQUEST),
    )
    cookie = (await request(app, "POST", "/set", json={"k": 1})).cookie()
    assert cookie is not None
    store.calls.clear()
    r = await request(app, "GET", "/all", cookies={"id": cookie.value})
    assert r.json() == {"k": 1}
    if isinstance(store, CookieSessionStore):
        # the expiry lives inside the cookie: it is re-sealed to move it on
        assert store.writes == ["put"] and r.cookie() is not None
    else:  # a rewrite carrying the new expiry: the record says when the session expires
        assert store.writes == ["put"] and r.cookie() is None


@pytest.mark.parametrize(("path", "status"), [("/fail?status=500", 500), ("/fail?status=503", 503)])
async def test_5xx_persists_nothing(
    store: RecordingStore, security: ContentSecurity, path: str, status: int
) -> None:
    app = make_app(store=store, content_security=security)
    r = await request(app, "POST", path)
    assert r.status == status and r.set_cookies == [] and store.calls == []


async def test_exception_persists_nothing(store: RecordingStore, security: ContentSecurity) -> None:
    app = make_app(store=store, content_security=security)
    r = await request(app, "POST", "/raise")
    assert r.status == 500 and isinstance(r.exception, RuntimeError)
    assert r.set_cookies == [] and store.calls == []


@pytest.mark.parametrize(("path", "status"), [("/redirect", 302), ("/fail?status=404", 404)])
async def test_3xx_and_4xx_persist(
    store: RecordingStore, security: ContentSecurity, path: str, status: int
) -> None:
    app = make_app(store=store, content_security=security)
    r = await request(app, "POST", path)
    assert r.status == status
    cookie = r.cookie()
    assert cookie is not None
    assert (await request(app, "GET", "/all", cookies={"id": cookie.value})).json() == {
        "written": True
    }


async def test_in_place_mutation_is_saved(store: RecordingStore, security: ContentSecurity) -> None:
    app = make_app(store=store, content_security=security)
    cookie = (await request(app, "POST", "/cart", json={"item": "apple"})).cookie()
    assert cookie is not None
    r = await request(
        app, "POST", "/cart-in-place", cookies={"id": cookie.value}, json={"item": "pear"}
    )
    assert r.json() == ["apple", "pear"]
    cookie = r.cookie()
    assert cookie is not None
    assert (await request(app, "GET", "/all", cookies={"id": cookie.value})).json() == {
        "cart": ["apple", "pear"]
    }


@pytest.mark.parametrize("size", [3000, 4100])
async def test_oversized_cookie_is_a_clear_500(
    security: ContentSecurity, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    from sessionware.stores import CookieSessionStore

    store = RecordingStore(CookieSessionStore())
    app = make_app(store=store, content_security=security)
    with caplog.at_level(logging.ERROR, logger="sessionware"):
        r = await request(app, "POST", "/set", json={"big": "x" * size})
    if size == 3000 and security is ContentSecurity.SIGNED_ACTIX:
        # actix's signed cookies carry the JSON in clear: 3000 bytes still fit (SIGNED's
        # base64url, like PRIVATE's base64, makes it a third larger)
        assert r.status == 200 and len(r.header_all("set-cookie")[0]) <= 4096
        return
    assert r.status == 500 and r.body == b"" and r.set_cookies == []
    assert "4096" in caplog.text and "bytes" in caplog.text


async def test_websocket_handler_reads_the_session(
    store: RecordingStore, security: ContentSecurity
) -> None:
    key = Key.generate()
    http_app = make_app(store=store, content_security=security, key=key)
    cookie = (await request(http_app, "POST", "/set", json={"user_id": "ferris"})).cookie()
    assert cookie is not None

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json(dict(ws.session))
        await ws.close()

    ws_app = Starlette(
        routes=[WebSocketRoute("/ws", endpoint)],
        middleware=[Middleware(SessionMiddleware, store=store, key=key, content_security=security)],
    )
    messages = await websocket(ws_app, "/ws", cookies={"id": cookie.value})
    assert [m["type"] for m in messages] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert json.loads(messages[1]["text"]) == {"user_id": "ferris"}
    assert all(name != b"set-cookie" for name, _ in messages[0].get("headers", []))
