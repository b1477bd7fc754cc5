"""The middleware's lifespan work: which stores a sweeper can clean (a clear exception at
construction for the others), and a sweep's report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sessionware import Key, NotSupportedError, SessionEvent, SessionMiddleware, SessionsSwept
from sessionware.lifespan import Sweeper
from sessionware.stores import (
    ABSENT,
    CookieSessionStore,
    MemcachedSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SQLiteSessionStore,
)
from tests.client import Reports, lifespan

KEY = Key.generate()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("store", "why"),
    [
        (lambda: RedisSessionStore.from_url("redis://127.0.0.1:6379/0"), "RedisSessionStore"),
        (lambda: MemcachedSessionStore.from_url("memcached://127.0.0.1:11211"), "Memcached"),
        (MemorySessionStore, "MemorySessionStore"),
    ],
)
def test_stores_that_expire_by_ttl_refuse_a_sweeper(store: Any, why: str) -> None:
    with pytest.raises(NotSupportedError, match=f"{why}.*expires records by their TTL itself"):
        SessionMiddleware(app, store=store(), key=KEY, sweep_every=timedelta(minutes=5))


def test_the_cookie_store_refuses_a_sweeper() -> None:
    with pytest.raises(NotSupportedError, match="the cookie store keeps nothing on the server"):
        SessionMiddleware(
            app, store=CookieSessionStore(), key=KEY, sweep_every=timedelta(minutes=5)
        )


@pytest.mark.parametrize("every", [timedelta(0), timedelta(seconds=-1), 60, "1h"])
def test_sweep_every_is_a_positive_timedelta(every: Any) -> None:
    with pytest.raises(ValueError, match=r"sweep_every must be a positive datetime\.timedelta"):
        SessionMiddleware(app, store=SQLiteSessionStore(":memory:"), key=KEY, sweep_every=every)


async def test_an_in_memory_sqlite_database_sweeps_under_its_own_lock() -> None:
    now = 1_000_000.0
    with pytest.warns(DeprecationWarning, match="clock"):  # a TTL clock the test moves
        store = SQLiteSessionStore(":memory:", clock=lambda: now)
    events: list[SessionEvent] = []
    sweeper = Sweeper(store, timedelta(minutes=1), on_event=events.append)
    try:
        await store.put("short", b"{}", timedelta(seconds=1), expect=ABSENT)
        await store.put("long", b"{}", timedelta(hours=1), expect=ABSENT)
        now += 2
        async with store.sweep_lock() as held:
            assert held
            assert (await sweeper.sweep()).outcome == "busy"
        report = await sweeper.sweep()
        assert report == SessionsSwept("swept", 1, report.seconds)
        assert events == [SessionsSwept("busy"), report]
        assert await store.get("long") is not None
    finally:
        await store.aclose()


async def test_a_failed_sweep_is_reported_and_the_sweeper_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SQLiteSessionStore(":memory:")
    await store.aclose()  # every call fails now
    events = Reports()
    wrapped = SessionMiddleware(
        app, store=store, key=KEY, sweep_every=timedelta(milliseconds=10), on_event=events
    )

    sent = await lifespan(wrapped, lambda: events.until(lambda found: len(found) >= 2))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert {e.outcome for e in events if isinstance(e, SessionsSwept)} == {"failed"}
    assert "session sweep failed: SQLite store failed to clear expired rows" in caplog.text
