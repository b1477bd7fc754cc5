"""Fixtures of the security suite: stores with a test clock, content-security modes, own Redis.

``backend`` runs a test over the cookie store and three server-side stores (memory, Redis at
127.0.0.1:6379 under a unique prefix, SQLite); ``server_backend`` over the server-side ones only.
Each backend can plant raw records behind the store's back, as an attacker with store access
(or a buggy neighbour service) could.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sessionware import ContentSecurity
from sessionware.repository import Repository
from sessionware.stores import ABSENT, CookieSessionStore, MemorySessionStore, SessionStore
from sessionware.stores.redis import RedisSessionStore
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.client import RecordingStore, stored
from tests.factories.redis import URL, Server, delete_prefixed, start_server, unique_prefix
from tests.services import require

ALL = ["cookie", "memory", "redis", "sqlite"]
SERVER_SIDE = ["memory", "redis", "sqlite"]
CLOCKED = ["cookie", "memory", "sqlite"]
PLANTABLE = ["cookie", "memory", "redis", "sqlite"]
"""Stores another process can write garbage into (the cookie store: with the key)."""
"""Stores whose expiry follows the injected clock (Redis expires on the server's own)."""


@dataclass
class Clock:
    """A settable clock for the middleware and the stores."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """One store under test, its recorder, its clock, and a way to plant raw records."""

    kind: str
    inner: SessionStore
    clock: Clock
    store: RecordingStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = RecordingStore(self.inner)

    @property
    def server_side(self) -> bool:
        return not isinstance(self.inner, CookieSessionStore)

    async def plant(self, key: str, text: str) -> None:
        """Write ``text`` as the raw record of session ``key`` (server-side stores only)."""
        inner: Any = self.inner
        id = Repository(inner).id_of(key)
        await inner.delete(id)
        data = text.encode("utf-8", "surrogatepass")
        assert await inner.put(id, data, timedelta(hours=1), expect=ABSENT) is not None

    async def live(self, key: str) -> bool:
        """Whether ``key`` holds a live (loadable) session right now."""
        return await stored(self.inner, key) is not None


@asynccontextmanager
async def _open(kind: str) -> AsyncIterator[Backend]:
    clock = Clock()
    if kind == "cookie":
        yield Backend(kind, CookieSessionStore(), clock)
    elif kind == "memory":
        yield Backend(kind, MemorySessionStore(), clock)
    elif kind == "redis":
        require("Redis", "127.0.0.1", 6379)
        prefix = unique_prefix()
        redis_store = RedisSessionStore.from_url(URL, key_prefix=prefix)
        try:
            yield Backend(kind, redis_store, clock)
        finally:
            await redis_store.aclose()
            await delete_prefixed(URL, prefix)
    elif kind == "sqlite":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sessionware-sec-") as directory:
            sqlite_store = SQLiteSessionStore(Path(directory) / "s.db")
            try:
                yield Backend(kind, sqlite_store, clock)
            finally:
                await sqlite_store.aclose()
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.fixture(params=ALL)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The cookie store and each server-side store in turn."""
    async with _open(request.param) as opened:
        yield opened


@pytest.fixture(params=SERVER_SIDE)
async def server_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """Each server-side store in turn."""
    async with _open(request.param) as opened:
        yield opened


@pytest.fixture(params=CLOCKED)
async def clocked_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The stores whose expiry the test clock drives."""
    async with _open(request.param) as opened:
        yield opened


@pytest.fixture(params=PLANTABLE)
async def plantable_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """The stores whose records can hold what another writer put there."""
    async with _open(request.param) as opened:
        yield opened


@pytest.fixture
async def cookie_backend() -> AsyncIterator[Backend]:
    """The cookie store alone (for what only a cookie carries: timestamps)."""
    async with _open("cookie") as opened:
        yield opened


@pytest.fixture(params=list(ContentSecurity), ids=lambda c: c.name.lower())
def security(request: pytest.FixtureRequest) -> ContentSecurity:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    """A redis-server of this test's own on a free loopback port (never the shared one)."""
    own = start_server(str(tmp_path), "--enable-debug-command", "yes")
    yield own
    own.stop()
