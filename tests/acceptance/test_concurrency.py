"""Concurrent requests on one session, for every server-side store, through the middleware.

A store wrapper holds one request between its load and its write while another request runs to
completion, forcing each interleaving deterministically; then real parallel requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import pytest

from sessionware import ContentSecurity, Key
from sessionware.stores import Changes, SessionKey, SessionStore
from tests.acceptance.apps import make_app
from tests.client import RecordingStore, Response, request


class PausingStore(RecordingStore):
    """Holds the next write (update, save or delete) until ``release`` is set."""

    def __init__(self, inner: SessionStore) -> None:
        super().__init__(inner)
        self.armed = False
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def _gate(self) -> None:
        if self.armed:
            self.armed = False
            self.arrived.set()
            await asyncio.wait_for(self.release.wait(), timeout=10)

    async def update(
        self,
        key: SessionKey,
        state: Mapping[str, Any],
        ttl: timedelta,
        changes: Changes | None = None,
    ) -> SessionKey | None:
        await self._gate()
        return await super().update(key, state, ttl, changes)

    async def save(self, state: Mapping[str, Any], ttl: timedelta) -> SessionKey:
        await self._gate()
        return await super().save(state, ttl)


@pytest.fixture
async def paused(server_store: SessionStore) -> AsyncIterator[PausingStore]:
    yield PausingStore(server_store)


async def _interleave(store: PausingStore, slow: Any, fast: Any) -> tuple[Response, Response]:
    """Run ``slow`` until it is about to write, run ``fast`` to the end, then finish ``slow``."""
    store.armed = True
    slow_task = asyncio.create_task(slow)
    await asyncio.wait_for(store.arrived.wait(), timeout=10)
    fast_response = await fast
    store.release.set()
    return await slow_task, fast_response


async def _start(app: Any, state: dict[str, Any]) -> str:
    cookie = (await request(app, "POST", "/set", json=state)).cookie()
    assert cookie is not None
    return cookie.value


async def test_writes_to_different_keys_both_survive(paused: PausingStore) -> None:
    app = make_app(store=paused)
    cookie = await _start(app, {"start": 0})
    slow, fast = await _interleave(
        paused,
        request(app, "POST", "/set", cookies={"id": cookie}, json={"a": 1}),
        request(app, "POST", "/set", cookies={"id": cookie}, json={"b": 2}),
    )
    assert slow.status == fast.status == 200
    final = await request(app, "GET", "/all", cookies={"id": cookie})
    assert final.json() == {"start": 0, "a": 1, "b": 2}


async def test_purge_is_not_undone_by_a_slower_writer(paused: PausingStore) -> None:
    app = make_app(store=paused)
    cookie = await _start(app, {"user_id": "u"})
    slow, fast = await _interleave(
        paused,
        request(app, "POST", "/set", cookies={"id": cookie}, json={"late": True}),
        request(app, "POST", "/logout", cookies={"id": cookie}),
    )
    assert fast.text == "Logged out: u"
    assert slow.status == 200
    removal = slow.cookie()
    assert removal is not None and removal.is_removal, "the late writer is told the session ended"
    assert (await request(app, "GET", "/all", cookies={"id": cookie})).json() == {}


async def test_a_write_racing_a_renew_lands_in_the_renewed_session(paused: PausingStore) -> None:
    app = make_app(store=paused)
    cookie = await _start(app, {"cart": ["x"]})
    slow, fast = await _interleave(
        paused,
        request(app, "POST", "/set", cookies={"id": cookie}, json={"theme": "dark"}),
        request(app, "POST", "/login", cookies={"id": cookie}, json={"user_id": "u"}),
    )
    renewed = fast.cookie()
    assert renewed is not None
    assert (await request(app, "GET", "/all", cookies={"id": renewed.value})).json() == {
        "cart": ["x"],
        "user_id": "u",
        "theme": "dark",
    }
    assert (await request(app, "GET", "/all", cookies={"id": cookie})).json() == {}
    assert slow.status == 200


async def test_clear_then_late_write_keeps_only_the_late_write(paused: PausingStore) -> None:
    app = make_app(store=paused)
    cookie = await _start(app, {"a": 1, "b": 2})
    await _interleave(
        paused,
        request(app, "POST", "/set", cookies={"id": cookie}, json={"c": 3}),
        request(app, "POST", "/clear", cookies={"id": cookie}),
    )
    assert (await request(app, "GET", "/all", cookies={"id": cookie})).json() == {"c": 3}


@pytest.mark.parametrize("security", list(ContentSecurity), ids=lambda c: c.name.lower())
async def test_parallel_writers_lose_no_update(
    server_store: SessionStore, security: ContentSecurity
) -> None:
    key = Key.generate()
    app = make_app(store=server_store, key=key, content_security=security)
    cookie = await _start(app, {"start": 0})
    responses = await asyncio.gather(
        *(
            request(app, "POST", "/set", cookies={"id": cookie}, json={f"k{i}": i})
            for i in range(25)
        )
    )
    assert all(r.status == 200 for r in responses)
    final = (await request(app, "GET", "/all", cookies={"id": cookie})).json()
    assert final == {"start": 0, **{f"k{i}": i for i in range(25)}}


async def test_parallel_in_place_mutations_of_different_keys(server_store: SessionStore) -> None:
    app = make_app(store=server_store)
    cookie = await _start(app, {"cart": [], "wishlist": []})
    await asyncio.gather(
        request(app, "POST", "/cart-in-place", cookies={"id": cookie}, json={"item": "apple"}),
        request(app, "POST", "/set", cookies={"id": cookie}, json={"wishlist": ["pear"]}),
    )
    final = (await request(app, "GET", "/all", cookies={"id": cookie})).json()
    assert final == {"cart": ["apple"], "wishlist": ["pear"]}
