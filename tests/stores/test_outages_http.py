"""The MariaDB and memcached stores behind SessionMiddleware while their server is killed and
restarted under load: only empty 503s while it is down, recovery without restarting the app,
and afterwards every session holds its own client's last acknowledged write (MariaDB) or, for
memcached (which keeps nothing across a restart), its own data or nothing, never another's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from sessionware.stores.memcached import MemcachedSessionStore
from sessionware.stores.mysql import MySQLSessionStore
from tests.acceptance.apps import make_app
from tests.client import request
from tests.factories import memcached as memcached_factory
from tests.factories import mysql as mysql_factory

CLIENTS, BEFORE, DOWN, AFTER = 8, 0.3, 0.8, 0.6
"""Clients; seconds of load before the outage, of outage, and of load after it."""


@asynccontextmanager
async def outage_target(kind: str, directory: Path) -> AsyncIterator[tuple[Any, Any]]:
    """``(store, server)``: the store on a server of the test's own, which has ``stop``/``start``."""
    if kind == "mysql":
        server: Any = await mysql_factory.start_server(str(directory))
        store: Any = MySQLSessionStore.from_dsn(server.dsn, connect_timeout=1)
        restart = server.start
    else:
        server = memcached_factory.start_server()
        store = MemcachedSessionStore.from_url(server.url, timeout=0.3)
        port = server.port

        def restart() -> None:
            server.process = memcached_factory.start_server(port).process

    server.restart = restart
    try:
        yield store, server
    finally:
        await store.aclose()
        server.stop()


@pytest.mark.parametrize("kind", ["mysql", "memcached"])
async def test_a_server_killed_and_restarted_under_load(kind: str, tmp_path: Path) -> None:
    async with outage_target(kind, tmp_path) as (store, server):
        app = make_app(store=store)
        cookies: dict[int, str] = {}
        for client in range(CLIENTS):
            response = await request(app, "POST", "/set", json={"client": client, "n": 0})
            cookie = response.cookie()
            assert response.status == 200 and cookie is not None
            cookies[client] = cookie.value
        acked = dict.fromkeys(range(CLIENTS), 0)
        attempted: dict[int, set[int]] = {client: set() for client in range(CLIENTS)}
        statuses: list[tuple[bool, int, bytes]] = []  # (whole request while down, status, body)
        down = False

        async def client(number: int, until: float) -> None:
            n = 0
            while time.monotonic() < until:
                n += 1
                started_down = down
                response = await request(
                    app, "POST", "/set", cookies={"id": cookies[number]}, json={"n": n}
                )
                statuses.append((started_down and down, response.status, response.body))
                attempted[number].add(n)
                if response.status == 200:
                    acked[number] = n
                await asyncio.sleep(0.01)

        async def outage() -> None:
            nonlocal down
            await asyncio.sleep(BEFORE)
            server.stop()
            down = True
            await asyncio.sleep(DOWN)
            down = False
            server.restart()

        until = time.monotonic() + BEFORE + DOWN + AFTER
        await asyncio.gather(outage(), *(client(n, until) for n in range(CLIENTS)))
        while_down = [(status, body) for whole, status, body in statuses if whole]
        assert while_down and all(item == (503, b"") for item in while_down)
        assert {status for _, status, _ in statuses} <= {200, 503}
        assert any(status == 200 for whole, status, _ in statuses if not whole)

        deadline = time.monotonic() + 10  # the pool meets its dead connections once each
        for number, cookie in cookies.items():
            while True:
                response = await request(app, "GET", "/all", cookies={"id": cookie})
                if response.status == 200 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert response.status == 200
            state = response.json()
            if kind == "memcached" and state == {}:
                continue  # gone with the restart: an empty session, never a wrong one
            assert state["client"] == number
            # The last acknowledged write, or a later one whose 503 came after it landed.
            later = state["n"] > acked[number] and state["n"] in attempted[number]
            assert state["n"] == acked[number] or later, (state, acked[number])
