"""Faults under load: uvicorn + SessionMiddleware + RedisSessionStore on a redis-server of the
test's own (free loopback port), 20 concurrent httpx clients, while Redis is paused, killed and
restarted, and filled until it evicts.

Expected: only opaque (empty) 503s while Redis is unavailable; recovery without restarting the
app; no request past the configured timeouts; no session ever holding another client's data;
nothing acknowledged lost, except what a kill (this Redis keeps nothing on disk: everything) or an
eviction legitimately loses, and then the session comes back empty, never wrong; clients sharing
one session and writing distinct keys lose no update.

Duration: ``SESSIONWARE_LOAD_SECONDS`` (default 12; 60 for the long form). ``pytest -s`` prints
the counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware

from sessionware import Key, SessionMiddleware
from sessionware.stores.redis import RedisSessionStore
from tests.acceptance.apps import ROUTES
from tests.factories.redis import Server, start_server
from tests.services import free_port

SECONDS = float(os.environ.get("SESSIONWARE_LOAD_SECONDS", "12"))
REDIS_TIMEOUT = 0.5
"""socket and connect timeouts of the store (seconds)."""
CLIENT_TIMEOUT = 8.0
LATENCY_BOUND = 4.0
"""No response may take longer: one command and one retry, each within the timeouts, plus slack."""
INDEPENDENT, TABS = 15, 5


@dataclass
class Tally:
    """What the clients saw."""

    kinds: Counter[str] = field(default_factory=Counter)
    max_latency: float = 0.0
    epoch: int = 0
    """Bumped at the start and end of every fault that may destroy data (kill, eviction)."""
    destructive: bool = False
    """True while such a fault is going on."""
    faults: list[str] = field(default_factory=list)
    recovered: dict[str, set[int]] = field(default_factory=dict)

    def served(self) -> int:
        return sum(v for k, v in self.kinds.items() if k.startswith("http_"))


class App:
    """uvicorn serving the session app in a thread of its own, on a free loopback port."""

    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        self.store = RedisSessionStore.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
        )

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            yield
            await self.store.aclose()

        app = Starlette(
            routes=ROUTES,
            middleware=[Middleware(SessionMiddleware, store=self.store, key=Key.generate())],
            lifespan=lifespan,
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="critical", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn stopped"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Client:
    """One browser: its own session, checked after every write."""

    def __init__(self, http: httpx.AsyncClient, name: str, tally: Tally) -> None:
        self.http, self.name, self.tally = http, name, tally
        self.cookie: str | None = None
        self.born: int | None = None  # written once, when the client starts a session
        self.acked = 0  # the last counter value the server acknowledged
        self.attempted = 0  # the highest value sent (a timed-out write may still land)
        self.epoch = 0  # tally.epoch at the last acknowledged write to an intact session

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response | None:
        headers = {"cookie": f"id={self.cookie}"} if self.cookie else {}
        started = time.monotonic()
        try:
            r = await self.http.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException:
            self.tally.kinds["client_timeout"] += 1
            return None
        except httpx.HTTPError as exc:
            self.tally.kinds[f"transport_{type(exc).__name__}"] += 1
            return None
        finally:
            self.tally.max_latency = max(self.tally.max_latency, time.monotonic() - started)
        self.http.cookies.clear()
        self.tally.kinds[f"http_{r.status_code}"] += 1
        if r.status_code == 503 and r.content:
            self.tally.kinds["503_with_body"] += 1
        if r.status_code == 503 and "set-cookie" in r.headers:
            self.tally.kinds["503_with_set_cookie"] += 1
        for line in r.headers.get_list("set-cookie"):
            name, _, rest = line.partition("=")
            if name == "id":
                self.cookie = rest.split(";", 1)[0] or None
        return r

    async def step(self) -> None:
        value = self.attempted + 1
        self.attempted = value
        body: dict[str, Any] = {"owner": self.name, "n": value}
        fresh = self.cookie is None
        if fresh:
            body["born"] = value
        r = await self.call("POST", "/set", body)
        if r is not None and r.status_code == 200:
            if fresh:
                self.born, self.epoch = value, self.tally.epoch
            self.acked = value
            self.tally.recovered.setdefault(self.name, set()).add(len(self.tally.faults))
        r = await self.call("GET", "/all")
        if r is None or r.status_code != 200:
            return
        self.check(r.json())

    def check(self, data: dict[str, Any]) -> None:
        if self.born is None:
            return
        if data and data.get("owner") != self.name:
            self.tally.kinds["crosstalk"] += 1
            return
        if data.get("born") != self.born:
            # The session is gone (empty, or recreated by a write): legitimate only if a kill
            # or an eviction happened since it was last known intact.
            legit = self.tally.destructive or self.tally.epoch != self.epoch
            self.tally.kinds["loss_legit" if legit else "loss"] += 1
            self.cookie, self.born, self.acked = None, None, 0
            return
        self.epoch = self.tally.epoch
        if not self.acked <= data.get("n", -1) <= self.attempted:
            self.tally.kinds["stale"] += 1


async def run_client(client: Client, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await client.step()
        await asyncio.sleep(0.005)


async def run_tab(
    http: httpx.AsyncClient, cookie: str, tab: int, acked: dict[int, int], stop: asyncio.Event
) -> None:
    """One tab of a shared session: writes only its own key, counting up."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            r = await http.post("/set", json={f"tab{tab}": n}, headers={"cookie": f"id={cookie}"})
        except httpx.HTTPError:
            continue
        http.cookies.clear()
        if r.status_code == 200:
            acked[tab] = n
        await asyncio.sleep(0.005)


async def fault_pause(redis_url: str, tally: Tally) -> None:
    admin = Redis.from_url(redis_url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        tally.faults.append("pause 1.5 s")
        await asyncio.sleep(1.6)
    finally:
        await admin.aclose()


def fault_kill(server: Server, directory: str, tally: Tally) -> Server:
    """SIGKILL redis-server, leave it down a while, start a new one on the same port."""
    tally.epoch += 1
    tally.destructive = True
    server.stop()
    tally.faults.append("kill")
    time.sleep(0.8)
    restarted = start_server(directory, port=server.port)
    tally.faults.append("restart (empty)")
    tally.destructive = False
    tally.epoch += 1
    return restarted


async def fault_evict(redis_url: str, tally: Tally) -> int:
    """Cap memory just above what is used, with allkeys-lru, and fill until Redis evicts."""
    admin = Redis.from_url(redis_url)
    try:
        tally.epoch += 1
        tally.destructive = True
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory-policy", "allkeys-lru")
        await admin.config_set("maxmemory", str(used + 1_000_000))
        tally.faults.append("maxmemory + fill")
        filler = b"x" * 4096
        for batch in range(40):
            pipe = admin.pipeline(transaction=False)
            for i in range(100):
                pipe.set(f"filler:{batch}:{i}", filler)
            await pipe.execute(raise_on_error=False)
            await asyncio.sleep(0.01)
        evicted = int((await admin.info("stats"))["evicted_keys"])
        await admin.config_set("maxmemory", "0")
        async for key in admin.scan_iter(match="filler:*", count=1000):
            await admin.unlink(key)
        tally.faults.append("maxmemory off")
        tally.destructive = False
        tally.epoch += 1
        return evicted
    finally:
        await admin.aclose()


async def test_faults_under_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = str(tmp_path)
    redis = start_server(directory)
    app = App(redis.url)
    app.start()
    tally = Tally()
    stop, tabs_stop = asyncio.Event(), asyncio.Event()
    phase = max(1.0, (SECONDS - 5) / 4)  # four calm phases; the faults take ~5 s
    limits = httpx.Limits(max_connections=INDEPENDENT + TABS + 5)
    timeout = httpx.Timeout(CLIENT_TIMEOUT)
    evicted = 0
    try:
        async with httpx.AsyncClient(base_url=app.url, limits=limits, timeout=timeout) as http:
            # The shared session the tabs write to.
            r = await http.post("/set", json={"shared": True})
            shared = r.headers["set-cookie"].split(";", 1)[0].partition("=")[2]
            acked: dict[int, int] = {}
            clients = [Client(http, f"client{i}", tally) for i in range(INDEPENDENT)]
            tasks = [asyncio.create_task(run_client(c, stop)) for c in clients]
            tabs = [
                asyncio.create_task(run_tab(http, shared, t, acked, tabs_stop)) for t in range(TABS)
            ]
            await asyncio.sleep(phase)  # calm
            await fault_pause(redis.url, tally)
            await asyncio.sleep(phase)  # recovery
            tabs_stop.set()
            await asyncio.wait_for(asyncio.gather(*tabs), timeout=30)
            r = await http.get("/all", headers={"cookie": f"id={shared}"})
            stored = r.json()
            lost_updates = sum(1 for t, n in acked.items() if stored.get(f"tab{t}", 0) < n)
            tab_writes = sum(acked.values())

            # Kill and restart Redis (in a thread: the event loop keeps serving the clients).
            redis = await asyncio.to_thread(fault_kill, redis, directory, tally)
            await asyncio.sleep(phase)  # recovery, same app process
            evicted = await fault_evict(redis.url, tally)
            await asyncio.sleep(phase)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
            # Final check: every client's session is its own (or empty after a legit loss).
            for client in clients:
                r = await client.call("GET", "/all")
                assert r is not None and r.status_code == 200
                client.check(r.json())
    finally:
        stop.set()
        tabs_stop.set()
        app.stop()
        redis.stop()

    kinds = tally.kinds
    report = {
        "seconds": SECONDS,
        "clients": INDEPENDENT + TABS,
        "requests_served": tally.served(),
        "faults_injected": tally.faults,
        "keys_evicted": evicted,
        "errors_by_kind": {k: v for k, v in sorted(kinds.items()) if not k.startswith("http_2")},
        "shared_session_writes_acked": tab_writes,
        "lost_updates_shared_session": lost_updates,
        "max_latency_s": round(tally.max_latency, 3),
    }
    with capsys.disabled():
        print("\nfaults under load:", json.dumps(report, indent=1))
    assert kinds["crosstalk"] == 0, "a session held another session's data"
    assert kinds["stale"] == 0 and kinds["loss"] == 0, "acknowledged data was lost"
    assert lost_updates == 0
    assert kinds["client_timeout"] == 0 and tally.max_latency < LATENCY_BOUND
    assert kinds["503_with_body"] == 0 and kinds["503_with_set_cookie"] == 0
    unexpected = {k for k in kinds if k.startswith("http_")} - {"http_200", "http_503"}
    assert not unexpected, unexpected
    assert not [k for k in kinds if k.startswith("transport_")], kinds
    assert kinds["http_503"] > 0, "the faults were not felt: the test proved nothing"
    assert kinds["http_200"] > 100 and tab_writes > TABS
    # Recovery without restarting the app: every client succeeded after the last fault.
    last = len(tally.faults)
    assert all(last in seen for seen in tally.recovered.values()), tally.recovered
    assert len(tally.recovered) == INDEPENDENT
