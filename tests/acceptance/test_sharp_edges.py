"""Sharp edges a new user or an attacker hits in the first hour (issue 16, items 1-3, 5-8, 10).

Each test is named after the item it pins down.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from sessionware import (
    ContentSecurity,
    Key,
    Session,
    SessionInsertError,
    SessionMiddleware,
    SessionNotLoadedError,
    get_session,
)
from sessionware.config import BrowserSession, CookieSettings
from sessionware.crypto import seal
from sessionware.engine import make_engine
from sessionware.repository import Repository
from sessionware.session import Tracker
from sessionware.state import MAX_DEPTH
from sessionware.stores import (
    ABSENT,
    CookieSessionStore,
    MemorySessionStore,
    RecordStore,
    RedisSessionStore,
)
from tests.client import RecordingStore, request

SECRET = "ya29.secret-oauth-token"


async def update_from_json(request: Request) -> Response:
    get_session(request).update(await request.json())
    return PlainTextResponse("ok")


async def read_one(request: Request) -> Response:
    return JSONResponse({"a": get_session(request).get("a")})


async def streamed_read(request: Request) -> Response:
    async def body() -> Any:
        yield b"start;"
        yield str(get_session(request).get("a")).encode()

    return StreamingResponse(body())


async def mutate_into_a_set(request: Request) -> Response:
    get_session(request)["lst"].append({1, 2})
    return PlainTextResponse("ok")


async def lazy_use(request: Request) -> Response:
    session = get_session(request)
    try:
        session["x"] = 1
    except SessionNotLoadedError:
        return PlainTextResponse("refused")
    return PlainTextResponse("used")


ROUTES = [
    Route("/update", update_from_json, methods=["POST"]),
    Route("/read", read_one),
    Route("/stream", streamed_read),
    Route("/mutate", mutate_into_a_set, methods=["POST"]),
    Route("/lazy", lazy_use, methods=["POST"]),
]


def app_with(store: Any, key: Key | None = None, **options: Any) -> Starlette:
    middleware = Middleware(SessionMiddleware, store=store, key=key or Key.generate(), **options)
    return Starlette(routes=ROUTES, middleware=[middleware])


async def plant(store: RecordStore, key: str, text: str) -> None:
    await store.put(Repository(store).id_of(key), text.encode(), _HOUR, expect=ABSENT)


_HOUR = BrowserSession().ttl


# -- item 1: keys and user ids that cannot be encoded; nothing secret in the logs --------------


def test_item1_a_key_that_cannot_be_encoded_is_refused_at_the_call() -> None:
    session = Session()
    with pytest.raises(SessionInsertError):
        session.update({"\ud800": 1})
    with pytest.raises(SessionInsertError):
        session["ok"] = "\udfff"
    assert dict(session) == {} and session.status.name == "UNCHANGED"


@pytest.mark.parametrize("user_id", ["\ud800", "a\x00b", "", "x" * 300])
def test_item1_bind_user_refuses_unstorable_ids_at_the_call(user_id: str) -> None:
    with pytest.raises(SessionInsertError):
        Session().bind_user(user_id)


async def test_item1_a_lone_surrogate_from_json_is_a_clear_error_not_a_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_with(MemorySessionStore())
    with caplog.at_level(logging.DEBUG, logger="sessionware"):
        r = await request(
            app, "POST", "/update", cookie_header=None, json={"oauth_token": SECRET, "\ud800": 1}
        )
    assert r.status == 500 and isinstance(r.exception, SessionInsertError)
    assert SECRET not in caplog.text


async def test_item1_a_store_failure_logs_no_state(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore(MemorySessionStore())

    async def fail(name: str) -> None:
        if name == "put":
            raise UnicodeEncodeError("utf-8", f'{{"oauth_token":"{SECRET}"}}', 0, 1, "boom")

    store.hook = fail
    with caplog.at_level(logging.DEBUG, logger="sessionware"):
        r = await request(app_with(store), "POST", "/update", json={"oauth_token": SECRET})
    assert r.status == 503 and r.body == b""
    assert "UnicodeEncodeError" in caplog.text and SECRET not in caplog.text


# -- item 2: authentic but unrepresentable state ----------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"v":1,"state":{"a":1e400}}',
        '{"v":1,"state":{"a":' + "[" * 970 + "]" * 970 + "}}",
    ],
    ids=["infinity", "970-deep"],
)
async def test_item2_unrepresentable_stored_state_is_unreadable(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    store, key = MemorySessionStore(), Key.generate()
    session_key = "k" * 64
    await plant(store, session_key, text)
    cookie = seal(ContentSecurity.PRIVATE, key, "id", session_key)
    with caplog.at_level(logging.WARNING, logger="sessionware"):
        r = await request(app_with(store, key), "GET", "/read", cookies={"id": cookie})
    assert r.status == 200 and r.json() == {"a": None}
    assert "unreadable" in caplog.text


async def test_item2_unrepresentable_sealed_cookie_is_unreadable() -> None:
    key = Key.generate()
    cookie = seal(ContentSecurity.PRIVATE, key, "id", '{"v":1,"state":{"a":1e400}}')
    app = app_with(CookieSessionStore(), key)
    r = await request(app, "GET", "/read", cookies={"id": cookie})
    assert r.status == 200 and r.json() == {"a": None}
    r = await request(app, "POST", "/update", cookies={"id": cookie}, json={"b": 1})
    assert r.status == 200


def test_item2_a_value_too_deep_to_store_is_refused_at_insert() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(SessionInsertError, match="deep"):
        Session()["deep"] = deep
    fine: Any = []
    for _ in range(MAX_DEPTH - 1):
        fine = [fine]
    Session()["fine"] = fine


# -- item 3: Vary on streamed reads ------------------------------------------------------------


async def test_item3_a_session_read_in_a_streamed_body_varies_by_cookie() -> None:
    store = MemorySessionStore()
    app = app_with(store)
    cookie = (await request(app, "POST", "/update", json={"a": 1})).cookie()
    assert cookie is not None
    r = await request(app, "GET", "/stream", cookies={"id": cookie.value})
    assert r.text == "start;1" and r.header("vary") == "Cookie"


# -- item 5: no secret in a repr -----------------------------------------------------------------


async def test_item5_the_request_context_repr_masks_key_and_cookie() -> None:
    key = Key.generate()
    engine = make_engine(
        MemorySessionStore(),
        keys=[key],
        security=ContentSecurity.PRIVATE,
        cookie=CookieSettings(),
        lifecycle=BrowserSession(),
    )
    session_key = "Q" * 64
    cookie = seal(ContentSecurity.PRIVATE, key, "id", session_key)
    tracker = engine.begin([f"id={cookie}".encode()])
    await engine.load(tracker)
    tracker.key = session_key
    text = repr(tracker)
    assert isinstance(tracker, Tracker)
    assert session_key not in text and cookie not in text and "cookies=1" in text


# -- item 6: a Secure cookie on plain http -------------------------------------------------------


async def http_request(app: Any, host: str, path: str = "/update") -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", host.encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": (host, 80),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": b'{"a": 1}', "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    await app(scope, receive, send)


async def test_item6_a_secure_cookie_on_plain_http_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_with(MemorySessionStore())
    with caplog.at_level(logging.WARNING, logger="sessionware"):
        for _ in range(3):
            await http_request(app, "testserver")
    warnings = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "https://" in message and "cookie_secure=False" in message
    assert "--proxy-headers" in message and "forwarded" in message


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000"])
async def test_item6_local_hosts_warn_too_once(host: str, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 28 item 10: httpx, requests, aiohttp and TestClient drop a Secure cookie over
    http even for localhost (browsers keep it): the warning names the fix, once."""
    app = app_with(MemorySessionStore())
    with caplog.at_level(logging.WARNING, logger="sessionware"):
        await http_request(app, host)
        await http_request(app, host)
    assert caplog.text.count("plain http") == 1
    assert "test clients" in caplog.text and "cookie_secure=False" in caplog.text


async def test_item6_insecure_cookies_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sessionware"):
        await http_request(app_with(MemorySessionStore(), cookie_secure=False), "app.test")
    assert "plain http" not in caplog.text


# -- item 7: store= that is not a store ----------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "named"),
    [
        ("redis://localhost:6379/9", "str"),
        ({}, "dict"),
        (None, "NoneType"),
        (RedisSessionStore, "class RedisSessionStore"),
        (Redis(), "Redis"),
    ],
    ids=["url", "dict", "none", "class", "raw-client"],
)
def test_item7_a_store_that_is_not_a_store_fails_at_construction(store: Any, named: str) -> None:
    with pytest.raises(TypeError, match="store= must be a session store") as info:
        SessionMiddleware(None, store=store, key=Key.generate())
    assert named in str(info.value) and "RedisSessionStore.from_url" in str(info.value)


# -- item 8: lazy sessions refuse use before load, cookie or not --------------------------------


async def test_item8_lazy_refuses_use_before_load_without_a_cookie() -> None:
    app = app_with(MemorySessionStore(), lazy=True)
    assert (await request(app, "POST", "/lazy")).text == "refused"
    assert (await request(app, "POST", "/lazy", cookies={"id": "x"})).text == "refused"


# -- item 10: a value changed in place into something not JSON ----------------------------------


async def test_item10_an_unstorable_in_place_change_names_the_key_and_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemorySessionStore()
    app = app_with(store)
    cookie = (await request(app, "POST", "/update", json={"lst": []})).cookie()
    assert cookie is not None
    with caplog.at_level(logging.ERROR, logger="sessionware"):
        r = await request(app, "POST", "/mutate", cookies={"id": cookie.value})
    assert r.status == 500 and r.body == b""
    assert "'lst'" in caplog.text and "set" in caplog.text
    assert "store failed" not in caplog.text
