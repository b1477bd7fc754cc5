"""A failing store: opaque 503s, the client's cookie left alone, nothing half-saved (SPEC §2.2)."""

from __future__ import annotations

import pytest
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from sessionware.stores import MemorySessionStore, RedisSessionStore, StoreError
from tests.acceptance.apps import make_app
from tests.client import RecordingStore, lifespan, request
from tests.factories.redis import unique_prefix
from tests.services import free_port, require

SECRET = "My error full of implementation details"


def broken(store: RecordingStore, *ops: str, error: type[Exception] = StoreError) -> None:
    """Make the chosen record operations fail as a store outage would."""

    async def hook(name: str) -> None:
        if name in ops:
            raise error(SECRET)

    store.hook = hook if ops else None


def BrokenStore() -> RecordingStore:
    return RecordingStore(MemorySessionStore())


@pytest.mark.parametrize("lazy", [False, True])
async def test_errors_are_opaque_on_load(lazy: bool, caplog: pytest.LogCaptureFixture) -> None:
    store = BrokenStore()
    app = make_app(store=store, lazy=lazy)
    cookie = (await request(app, "POST", "/do_something")).cookie()
    assert cookie is not None
    broken(store, "get")
    r = await request(app, "POST", "/do_something", cookies={"id": cookie.value})
    assert r.status == 503 and r.body == b"" and r.set_cookies == []
    assert SECRET not in r.text and SECRET in caplog.text
    broken(store)
    r = await request(app, "GET", "/", cookies={"id": cookie.value})
    assert r.json() == {"user_id": None, "counter": 1}, "nothing was lost"


@pytest.mark.parametrize(
    ("op", "path"), [("save", "/do_something"), ("update", "/do_something"), ("purge", "/purge")]
)
async def test_errors_are_opaque_on_save(op: str, path: str) -> None:
    store = BrokenStore()
    app = make_app(store=store)
    cookie = None
    if op != "save":
        cookie = (await request(app, "POST", "/do_something")).cookie()
        assert cookie is not None
    broken(store, "put")
    cookies = {"id": cookie.value} if cookie else None
    r = await request(app, "POST", path, cookies=cookies)
    assert r.status == 503 and r.body == b"" and r.set_cookies == []
    if cookie is not None:
        broken(store)
        r = await request(app, "GET", "/", cookies={"id": cookie.value})
        assert r.json() == {"user_id": None, "counter": 1}


async def test_unexpected_exception_from_a_store_is_also_a_503() -> None:
    store = BrokenStore()
    app = make_app(store=store)
    cookie = (await request(app, "POST", "/do_something")).cookie()
    assert cookie is not None
    broken(store, "put", error=ConnectionError)  # not a store error
    r = await request(app, "POST", "/purge", cookies={"id": cookie.value})
    assert r.status == 503 and r.body == b""


# --- issue 28 item 15: a store that is down at start-up; the store-failure body ---------------


async def test_a_redis_that_is_down_fails_the_startup_naming_host_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It was noticed only as 503s, one request at a time."""
    port = free_port()
    store = RedisSessionStore.from_url(
        f"redis://:hunter2@127.0.0.1:{port}/0", socket_connect_timeout=1
    )
    app = make_app(store=store, check_store_on_startup=True)
    try:
        [failed] = await lifespan(app)
    finally:
        await store.aclose()
    assert failed["type"] == "lifespan.startup.failed"
    message = failed["message"]
    assert f"127.0.0.1:{port}" in message and "Connection refused" in message
    assert "hunter2" not in message and "hunter2" not in caplog.text
    assert f"session store check at start-up failed: {message}" in caplog.text


def test_a_working_store_completes_the_startup(caplog: pytest.LogCaptureFixture) -> None:
    require("Redis", "127.0.0.1", 6379)
    caplog.set_level("INFO", logger="sessionware")
    app = make_app(
        store=RedisSessionStore.from_url("redis://127.0.0.1:6379/0", key_prefix=unique_prefix()),
        check_store_on_startup=True,
    )
    with TestClient(app, base_url="https://testserver") as client:
        assert "check at start-up passed (RedisSessionStore)" in caplog.text
        cookie = client.post("/do_something").cookies.get("id")
        assert cookie is not None
        assert client.get("/").json() == {"user_id": None, "counter": 1}


@pytest.mark.parametrize("failing", ["get", "put"])
async def test_the_apps_store_error_response_is_the_body_of_the_503(failing: str) -> None:
    store = BrokenStore()
    app = make_app(
        store=store,
        store_error_response=lambda: PlainTextResponse("Back in a minute", status_code=200),
    )
    cookie = (await request(app, "POST", "/do_something")).cookie()
    assert cookie is not None
    broken(store, failing)
    r = await request(app, "POST", "/do_something", cookies={"id": cookie.value})
    assert r.status == 503 and r.text == "Back in a minute" and r.set_cookies == []
    assert SECRET not in r.text and r.header("cache-control") == "no-store"
    broken(store)
    r = await request(app, "GET", "/", cookies={"id": cookie.value})
    assert r.json() == {"user_id": None, "counter": 1}, "nothing was lost"
