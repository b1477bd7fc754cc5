"""A failing store: opaque 503s, the client's cookie left alone, nothing half-saved (SPEC §2.2)."""

from __future__ import annotations

import pytest

from sessionware.stores import MemorySessionStore, StoreError
from tests.acceptance.apps import make_app
from tests.client import RecordingStore, request

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
