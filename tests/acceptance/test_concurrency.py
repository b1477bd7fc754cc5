"""Concurrent requests on one session, for every record store, through the middleware.

A ``Gate`` on the recording store parks one request at a chosen store call while another runs to
completion, forcing each interleaving deterministically; then real parallel requests. The
"found" tests are the attacks the first version lost to (see the persistence-core issue).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionware import ContentSecurity, Key, SessionAdmin, get_session
from sessionware.repository import Repository
from sessionware.stores import (
    PostgresSessionStore,
    RecordStore,
    RedisSessionStore,
    StoreError,
    UserIndex,
)
from tests.acceptance.apps import ROUTES, make_app
from tests.client import Gate, RecordingStore, request
from tests.conftest import FACTORIES, SERVER_SIDE


async def login_bound(request: Request) -> Response:
    """A login as real apps write it: check the password (an await), bind, renew."""
    session = get_session(request)
    body = await request.json()
    await asyncio.sleep(0)
    session["user_id"] = body["user_id"]
    session.bind_user(body["user_id"])
    session.renew()
    return JSONResponse(dict(session))


APP_ROUTES = [*ROUTES, Route("/login-bound", login_bound, methods=["POST"])]


@pytest.fixture
async def recording(server_store: RecordStore) -> AsyncIterator[RecordingStore]:
    yield RecordingStore(server_store)


def app_for(store: RecordingStore | Repository, **options: Any) -> Any:
    return make_app(store=store, routes=APP_ROUTES, **options)


def two_processes(store: RecordingStore, **options: Any) -> tuple[Any, Any]:
    """Two apps over one store with one key, as two processes behind a load balancer: one
    process's writes of a session take turns, so writes that race through the store (one
    parked at a put while the other commits) come from two processes."""
    key = Key.generate()
    return app_for(store, key=key, **options), app_for(store, key=key, **options)


async def _interleave(
    store: RecordingStore,
    gate: Gate,
    slow: Coroutine[Any, Any, Any],
    fast: Coroutine[Any, Any, Any],
) -> tuple[Any, Any]:
    """Run ``slow`` until the gate parks it, run ``fast`` to the end, then finish ``slow``."""
    store.hook = gate
    slow_task = asyncio.create_task(slow)
    await asyncio.wait_for(gate.arrived.wait(), timeout=30)
    store.hook = None
    fast_result = await fast
    gate.release.set()
    return await slow_task, fast_result


async def _start(app: Any, state: dict[str, Any]) -> str:
    cookie = (await request(app, "POST", "/set", json=state)).cookie()
    assert cookie is not None
    return cookie.value


async def _all(app: Any, cookie: str) -> Any:
    return (await request(app, "GET", "/all", cookies={"id": cookie})).json()


async def test_writes_to_different_keys_both_survive(recording: RecordingStore) -> None:
    app, other = two_processes(recording)
    cookie = await _start(app, {"start": 0})
    slow, fast = await _interleave(
        recording,
        Gate("put"),
        request(app, "POST", "/set", cookies={"id": cookie}, json={"a": 1}),
        request(other, "POST", "/set", cookies={"id": cookie}, json={"b": 2}),
    )
    assert slow.status == fast.status == 200
    assert await _all(app, cookie) == {"start": 0, "a": 1, "b": 2}


async def test_clear_then_late_write_keeps_only_the_late_write(recording: RecordingStore) -> None:
    app, other = two_processes(recording)
    cookie = await _start(app, {"a": 1, "b": 2})
    await _interleave(
        recording,
        Gate("put"),
        request(app, "POST", "/set", cookies={"id": cookie}, json={"c": 3}),
        request(other, "POST", "/clear", cookies={"id": cookie}),
    )
    assert await _all(app, cookie) == {"c": 3}


async def test_purge_is_not_undone_by_a_slower_writer(recording: RecordingStore) -> None:
    app = app_for(recording)
    cookie = await _start(app, {"user_id": "u"})
    slow, fast = await _interleave(
        recording,
        Gate("put"),
        request(app, "POST", "/set", cookies={"id": cookie}, json={"late": True}),
        request(app, "POST", "/logout", cookies={"id": cookie}),
    )
    assert fast.text == "Logged out: u"
    assert slow.status == 200
    removal = slow.cookie()
    assert removal is not None and removal.is_removal, "the late writer is told the session ended"
    assert await _all(app, cookie) == {}


# -- found 1: revocation undone by a slow request ---------------------------------------------


def _clocked(factory: str) -> bool:
    return "clock" in inspect.signature(FACTORIES[factory].store).parameters


@pytest.mark.parametrize("factory", SERVER_SIDE)
async def test_found1_revocation_survives_the_tombstone_expiring(factory: str) -> None:
    """Log in; a slow request loads; log out; the tombstone expires; the slow request writes:
    it must end the session (removal cookie), never save the state under a new key."""
    now = [time.time()]
    options = {"clock": lambda: now[0]} if _clocked(factory) else {}
    async with FACTORIES[factory].store(**options) as inner:
        store = RecordingStore(inner)
        repository = Repository(store, tombstone_ttl=timedelta(seconds=1), **options)
        app = app_for(repository, **options)
        cookie = await _start(app, {"user_id": "ada", "cart": [1]})
        gate = Gate("put")

        async def logout_then_expire() -> Any:
            response = await request(app, "POST", "/logout", cookies={"id": cookie})
            if options:
                now[0] += 2
            else:
                await asyncio.sleep(2.2)  # the tombstone's real TTL passes
            return response

        slow, fast = await _interleave(
            store,
            gate,
            request(app, "POST", "/set", cookies={"id": cookie}, json={"late": 1}),
            logout_then_expire(),
        )
        assert fast.text == "Logged out: ada"
        assert slow.status == 200
        removal = slow.cookie()
        assert removal is not None and removal.is_removal
        assert await _all(app, cookie) == {}
        puts_after = store.calls.count("put")
        # Nothing was created for the slow request: a new session would need a new put ABSENT.
        r = await request(app, "GET", "/all", cookies={"id": cookie})
        assert r.json() == {} and store.calls.count("put") == puts_after


# -- found 2: a write during a login's renew is lost -----------------------------------------


@pytest.mark.parametrize("nth", [1, 2], ids=["before-new-record", "before-tombstone"])
async def test_found2_a_write_during_renew_is_carried_over(
    recording: RecordingStore, nth: int
) -> None:
    app, other = two_processes(recording)
    cookie = await _start(app, {"cart": ["x"]})
    # The login parks at its first put (the new record) or its second (burying the old one).
    login, csrf = await _interleave(
        recording,
        Gate("put", nth),
        request(app, "POST", "/login", cookies={"id": cookie}, json={"user_id": "u"}),
        request(other, "POST", "/set", cookies={"id": cookie}, json={"csrf": "t1"}),
    )
    assert csrf.status == 200
    renewed = login.cookie()
    assert renewed is not None and not renewed.is_removal
    assert await _all(app, renewed.value) == {"cart": ["x"], "user_id": "u", "csrf": "t1"}
    assert await _all(app, cookie) == {}


async def test_a_write_committing_after_a_login_is_never_carried_into_it(
    recording: RecordingStore,
) -> None:
    """Issue 24: a request that loaded the pre-login key and commits after the login's
    tombstone stores nothing (an opaque 409): it could be an attacker's, holding a planted key."""
    app, other = two_processes(recording)
    cookie = await _start(app, {"cart": ["x"]})
    slow, fast = await _interleave(
        recording,
        Gate("put"),
        request(app, "POST", "/set", cookies={"id": cookie}, json={"payout": "attacker"}),
        request(other, "POST", "/login", cookies={"id": cookie}, json={"user_id": "u"}),
    )
    renewed = fast.cookie()
    assert renewed is not None
    assert await _all(app, renewed.value) == {"cart": ["x"], "user_id": "u"}
    assert await _all(app, cookie) == {}
    assert slow.status == 409 and slow.body == b""
    assert slow.cookie() is None, "the slow request must not learn (or drop) the renewed key"


# -- found 3: sign-out-everywhere misses a session renewed at the same moment -------------------


@pytest.mark.parametrize("nth", [1, 2], ids=["before-new-record", "before-tombstone"])
async def test_found3_sign_out_everywhere_catches_a_racing_renewal(
    recording: RecordingStore, nth: int
) -> None:
    if not isinstance(recording, UserIndex):
        pytest.skip("the store has no per-user index")
    app = app_for(recording)
    first = (await request(app, "POST", "/login-bound", json={"user_id": "ada"})).cookie()
    assert first is not None
    # The second login parks before its new record or before burying the old one, while
    # "sign out everywhere" runs to the end.
    login, _ = await _interleave(
        recording,
        Gate("put", nth),
        request(app, "POST", "/login-bound", cookies={"id": first.value}, json={"user_id": "ada"}),
        SessionAdmin(recording).end_all_for("ada"),
    )
    assert await SessionAdmin(recording).sessions_for("ada") == []
    cookie = login.cookie()
    if cookie is not None and not cookie.is_removal:
        assert await _all(app, cookie.value) == {}, "the renewed session must be ended too"
    assert await _all(app, first.value) == {}


@pytest.mark.parametrize("factory", [f for f in ("redis", "postgres") if f in FACTORIES])
async def test_found3_randomized_races(factory: str) -> None:
    """Sign-out-everywhere started together with a renewal: no session carrying the signed-out
    state survives (a login that loaded after the sign-out rightly starts a new one)."""
    async with FACTORIES[factory].store() as store:
        app = app_for(RecordingStore(store))
        for i in range(100):
            user = f"racer{i}"
            first = (await request(app, "POST", "/login-bound", json={"user_id": user})).cookie()
            assert first is not None
            marked = {"id": first.value}
            await request(app, "POST", "/set", cookies=marked, json={"old": True})
            login, _ = await asyncio.gather(
                request(app, "POST", "/login-bound", cookies=marked, json={"user_id": user}),
                SessionAdmin(store).end_all_for(user),
            )
            cookie = login.cookie()
            if cookie is not None and not cookie.is_removal:
                assert "old" not in await _all(app, cookie.value), f"iteration {i}"
            for info in await SessionAdmin(store).sessions_for(user):
                record = await store.get(info.id)
                assert record is not None and b'"old"' not in record.data, f"iteration {i}"
            assert await _all(app, first.value) == {}


# -- found 4: a store fault in the middle of a renew loses the session --------------------------


@pytest.mark.parametrize(
    ("op", "nth"),
    [("put", 1), ("put", 2), ("index_add", 1)],
    ids=["new-record", "tombstone", "user-index"],
)
async def test_found4_a_fault_during_renew_loses_nothing(
    recording: RecordingStore, op: str, nth: int
) -> None:
    if op == "index_add" and not hasattr(recording, "index_add"):
        pytest.skip("the store has no per-user index")
    app = app_for(recording)
    first = (await request(app, "POST", "/login-bound", json={"user_id": "ada"})).cookie()
    assert first is not None
    await request(app, "POST", "/set", cookies={"id": first.value}, json={"cart": [1, 2]})
    recording.hook = Gate(op, nth, fail=StoreError("the store paused"))
    r = await request(
        app, "POST", "/login-bound", cookies={"id": first.value}, json={"user_id": "ada"}
    )
    recording.hook = None
    if (op, nth) == ("put", 2):
        # The swap failed before it took effect: the renewal read the old record again, saw it
        # live and unchanged, and tried once more.
        renewed = r.cookie()
        assert r.status == 200 and renewed is not None
        assert await _all(app, renewed.value) == {"user_id": "ada", "cart": [1, 2]}
        assert await _all(app, first.value) == {}
        return
    assert r.status == 503 and r.set_cookies == []
    # The client kept its old cookie: its session and cart are still there.
    assert await _all(app, first.value) == {"user_id": "ada", "cart": [1, 2]}


# -- real parallelism ----------------------------------------------------------------------


@pytest.mark.parametrize("security", list(ContentSecurity), ids=lambda c: c.name.lower())
async def test_parallel_writers_lose_no_update(
    server_store: RecordStore, security: ContentSecurity
) -> None:
    app = app_for(RecordingStore(server_store), key=Key.generate(), content_security=security)
    cookie = await _start(app, {"start": 0})
    responses = await asyncio.gather(
        *(
            request(app, "POST", "/set", cookies={"id": cookie}, json={f"k{i}": i})
            for i in range(25)
        )
    )
    assert all(r.status == 200 for r in responses)
    assert await _all(app, cookie) == {"start": 0, **{f"k{i}": i for i in range(25)}}


async def test_parallel_in_place_mutations_of_different_keys(server_store: RecordStore) -> None:
    app = app_for(RecordingStore(server_store))
    cookie = await _start(app, {"cart": [], "wishlist": []})
    await asyncio.gather(
        request(app, "POST", "/cart-in-place", cookies={"id": cookie}, json={"item": "apple"}),
        request(app, "POST", "/set", cookies={"id": cookie}, json={"wishlist": ["pear"]}),
    )
    assert await _all(app, cookie) == {"cart": ["apple"], "wishlist": ["pear"]}


# -- counters: update_or against plain assignment (issue 30 item 3) -----------------------------


class Together:
    """Holds each request that arrives until ``count`` have, so every one of them read the
    session before any of them writes it: the most stale a write can be."""

    def __init__(self, count: int) -> None:
        self.count, self.arrived, self.all_in = count, 0, asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived == self.count:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), timeout=30)


def counter_routes(together: Together) -> list[Route]:
    async def increment(request: Request) -> Response:
        session = get_session(request)
        await session.load()
        await together.wait()
        session.update_or("n", 1, lambda n: n + 1)
        return JSONResponse({"n": session["n"]})

    async def assign(request: Request) -> Response:
        session = get_session(request)
        n = (await session.load()).get("n", 0)
        await together.wait()
        session["n"] = n + 1
        return JSONResponse({"n": session["n"]})

    return [Route("/increment", increment), Route("/assign", assign), *APP_ROUTES]


@asynccontextmanager
async def same_store_twice(factory: str) -> AsyncIterator[tuple[RecordStore, RecordStore]]:
    """Two store instances (own clients, own pools) over one Redis prefix or PostgreSQL table,
    as two processes have."""
    async with FACTORIES[factory].store() as first:
        if factory == "redis":
            second: Any = RedisSessionStore.from_url(
                FACTORIES[factory].URL, key_prefix=first.key_prefix
            )
        else:
            second = PostgresSessionStore.from_dsn(FACTORIES[factory].DSN, table=first.table)
        try:
            yield first, second
        finally:
            await second.aclose()


PER_PROCESS = 12


@pytest.mark.parametrize("factory", [f for f in ("redis", "postgres") if f in FACTORIES])
@pytest.mark.parametrize("path", ["/increment", "/assign"])
async def test_update_or_counts_every_acknowledged_increment(factory: str, path: str) -> None:
    """N acknowledged ``update_or`` increments, from concurrent requests in two processes that
    all read the counter before any of them writes: the counter is N. Plain assignment is
    last-writer-wins per key (documented): each request stores the value it computed from a
    stale read, so the counter rises by 1 here."""
    async with same_store_twice(factory) as (first, second):
        key = Key.generate()
        together = Together(2 * PER_PROCESS)
        apps = [
            make_app(store=store, key=key, routes=counter_routes(together))
            for store in (first, second)
        ]
        cookie = await _start(apps[0], {"n": 0})
        responses = await asyncio.gather(
            *(
                request(apps[i % 2], "GET", path, cookies={"id": cookie})
                for i in range(2 * PER_PROCESS)
            )
        )
        acknowledged = sum(r.status == 200 for r in responses)
        assert acknowledged == 2 * PER_PROCESS, [r.status for r in responses]
        for app in apps:
            counter = (await _all(app, cookie))["n"]
            assert counter == (acknowledged if path == "/increment" else 1)
