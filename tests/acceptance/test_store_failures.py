"""A failing store: opaque 503s, the client's cookie left alone, nothing half-saved (SPEC §2.2)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from sessionware.state import StoredState
from sessionware.stores import (
    Changes,
    LoadError,
    MemorySessionStore,
    SaveError,
    SessionKey,
    UpdateError,
)
from tests.acceptance.apps import make_app
from tests.client import RecordingStore, request

SECRET = "My error full of implementation details"


class BrokenStore(RecordingStore):
    """A memory store whose chosen operations fail as a store outage would."""

    def __init__(self) -> None:
        super().__init__(MemorySessionStore())
        self.broken: set[str] = set()

    def _check(self, op: str) -> None:
        if op in self.broken:
            raise {"load": LoadError, "save": SaveError, "update": UpdateError}.get(
                op, ConnectionError
            )(SECRET)

    async def load(self, key: SessionKey) -> StoredState | None:
        self._check("load")
        return await super().load(key)

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey:
        self._check("save")
        return await super().save(state, ttl)

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None:
        self._check("update")
        return await super().update(key, state, ttl, changes)

    async def delete(self, key: SessionKey, successor: SessionKey | None = None) -> None:
        self._check("delete")
        await super().delete(key, successor)


@pytest.mark.parametrize("lazy", [False, True])
async def test_errors_are_opaque_on_load(lazy: bool, caplog: pytest.LogCaptureFixture) -> None:
    store = BrokenStore()
    app = make_app(store=store, lazy=lazy)
    cookie = (await request(app, "POST", "/do_something")).cookie()
    assert cookie is not None
    store.broken = {"load"}
    r = await request(app, "POST", "/do_something", cookies={"id": cookie.value})
    assert r.status == 503 and r.body == b"" and r.set_cookies == []
    assert SECRET not in r.text and SECRET in caplog.text
    store.broken = set()
    r = await request(app, "GET", "/", cookies={"id": cookie.value})
    assert r.json() == {"user_id": None, "counter": 1}, "nothing was lost"


@pytest.mark.parametrize(
    ("op", "path"), [("save", "/do_something"), ("update", "/do_something"), ("delete", "/purge")]
)
async def test_errors_are_opaque_on_save(op: str, path: str) -> None:
    store = BrokenStore()
    app = make_app(store=store)
    cookie = None
    if op != "save":
        cookie = (await request(app, "POST", "/do_something")).cookie()
        assert cookie is not None
    store.broken = {op}
    cookies = {"id": cookie.value} if cookie else None
    r = await request(app, "POST", path, cookies=cookies)
    assert r.status == 503 and r.body == b"" and r.set_cookies == []
    if cookie is not None:
        store.broken = set()
        r = await request(app, "GET", "/", cookies={"id": cookie.value})
        assert r.json() == {"user_id": None, "counter": 1}


async def test_unexpected_exception_from_a_store_is_also_a_503() -> None:
    store = BrokenStore()
    app = make_app(store=store)
    cookie = (await request(app, "POST", "/do_something")).cookie()
    assert cookie is not None
    store.broken = {"delete"}  # raises ConnectionError, not a store error
    r = await request(app, "POST", "/purge", cookies={"id": cookie.value})
    assert r.status == 503 and r.body == b""
