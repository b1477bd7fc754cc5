"""No record holds a session key in clear (issue 11): grep what each store keeps after a workload.

The workload goes through the middleware: new sessions, writes, a bound user, renewals (so
tombstones with successors), a purge, sign-out-everywhere. Every key any cookie carried is then
looked for in everything the store holds. With ``hash_keys=False`` the keys are there, which
shows the search can fail. (Redis has its own version in test_redis.py.)
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import asyncmy
import asyncpg  # type: ignore[import-untyped]
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionware import ContentSecurity, Key, SessionAdmin, get_admin, get_session
from sessionware.crypto import unseal
from sessionware.stores import MemorySessionStore, RecordStore
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.acceptance.apps import ROUTES, make_app
from tests.client import request
from tests.factories import mysql as mysql_factory
from tests.factories import postgres as postgres_factory
from tests.factories import redis as redis_factory

Dump = Callable[[], Awaitable[bytes]]


async def login_bound(request: Request) -> Response:
    session = get_session(request)
    session["user_id"] = (await request.json())["user_id"]
    session.bind_user(session["user_id"])
    session.renew()
    return JSONResponse(dict(session))


async def workload(store: RecordStore) -> set[str]:
    """Run sessions through the app; every session key its cookies carried."""
    key = Key.generate()
    app = make_app(
        store=store, key=key, routes=[*ROUTES, Route("/bind", login_bound, methods=["POST"])]
    )
    cookies: list[str] = []

    async def call(method: str, path: str, cookie: str | None = None, **kw: Any) -> str | None:
        r = await request(app, method, path, cookies={"id": cookie} if cookie else None, **kw)
        issued = r.cookie()
        if issued is not None and issued.value:
            cookies.append(issued.value)
            return issued.value
        return cookie

    for n in range(3):
        first = await call("POST", "/set", json={"n": n})
        bound = await call("POST", "/bind", first, json={"user_id": f"user{n % 2}"})
        await call("POST", "/set", bound, json={"cart": [n]})
        await call("POST", "/renew", bound)
    gone = await call("POST", "/set", json={"bye": True})
    await call("POST", "/purge", gone)
    await SessionAdmin(store).end_all_for("user1")
    keys = set()
    for value in cookies:
        opened = unseal(ContentSecurity.PRIVATE, [key], "id", unquote(value))
        assert opened is not None
        keys.add(opened[0])
    assert len(keys) >= 10
    return keys


@asynccontextmanager
async def memory(hash_keys: bool) -> AsyncIterator[tuple[RecordStore, Dump]]:
    store = MemorySessionStore(hash_keys=hash_keys)

    async def dump() -> bytes:
        parts = [repr(store._records).encode(), repr(store._index).encode()]
        return b"\n".join(parts)

    yield store, dump


@asynccontextmanager
async def sqlite(hash_keys: bool, tmp_path: Path) -> AsyncIterator[tuple[RecordStore, Dump]]:
    path = tmp_path / "sessions.db"
    store = SQLiteSessionStore(path, hash_keys=hash_keys)

    async def dump() -> bytes:
        return _file_bytes(path)

    try:
        yield store, dump
    finally:
        await store.aclose()


def _file_bytes(path: Path) -> bytes:
    """Every byte of the SQLite file and its WAL, after a checkpoint."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    finally:
        conn.close()
    return b"".join(p.read_bytes() for p in path.parent.iterdir())


@asynccontextmanager
async def postgres(hash_keys: bool) -> AsyncIterator[tuple[RecordStore, Dump]]:
    async with postgres_factory.store(hash_keys=hash_keys) as store:

        async def dump() -> bytes:
            conn = await asyncpg.connect(postgres_factory.DSN)
            try:
                rows = await conn.fetch(f"SELECT * FROM {store.table}")
                rows += await conn.fetch(f"SELECT * FROM {store.table}_users")
            finally:
                await conn.close()
            return repr([tuple(row) for row in rows]).encode()

        yield store, dump


@asynccontextmanager
async def mysql(hash_keys: bool) -> AsyncIterator[tuple[RecordStore, Dump]]:
    async with mysql_factory.store() as store:
        store.hash_keys = hash_keys

        async def dump() -> bytes:
            conn = await asyncmy.connect(host="127.0.0.1", port=3306, user="root", db="test")
            try:
                async with conn.cursor() as cursor:
                    rows: list[Any] = []
                    for table in (store.table, f"{store.table}_users"):
                        await cursor.execute(f"SELECT * FROM {table}")
                        rows += list(await cursor.fetchall())
            finally:
                conn.close()
            return repr(rows).encode()

        yield store, dump


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres", "mysql"])
@pytest.mark.parametrize("hash_keys", [True, False], ids=["hashed", "clear"])
async def test_no_session_key_is_kept_in_clear(kind: str, hash_keys: bool, tmp_path: Path) -> None:
    opener = {
        "memory": lambda: memory(hash_keys),
        "sqlite": lambda: sqlite(hash_keys, tmp_path),
        "postgres": lambda: postgres(hash_keys),
        "mysql": lambda: mysql(hash_keys),
    }[kind]
    async with opener() as (store, dump):
        keys = await workload(store)
        held = await dump()
    found = {key for key in keys if key.encode() in held}
    if hash_keys:
        assert found == set(), f"{len(found)} session keys kept in clear"
    else:
        assert found, "the search finds keys when they are kept in clear"


async def whoami(request: Request) -> Response:
    return JSONResponse({"id": get_session(request).id})


async def login_as(request: Request) -> Response:
    session = get_session(request)
    session.renew()
    session.bind_user((await request.json())["user"])
    return JSONResponse({"id": session.id})


async def end_this(request: Request) -> Response:
    session = get_session(request)
    return JSONResponse({"ended": await get_admin(request).end_session(session.id)})


async def end_others(request: Request) -> Response:
    session = get_session(request)
    admin = get_admin(request)
    ended = await admin.end_all_for(session["who"], keep=session)
    return JSONResponse({"ended": ended})


async def devices(request: Request) -> Response:
    infos = await get_admin(request).sessions_for(get_session(request)["who"])
    return JSONResponse([info.id for info in infos])


async def remember(request: Request) -> Response:
    session = get_session(request)
    session["who"] = (await request.json())["user"]
    return JSONResponse({})


ID_ROUTES = [
    Route("/whoami", whoami),
    Route("/login", login_as, methods=["POST"]),
    Route("/end-this", end_this, methods=["POST"]),
    Route("/end-others", end_others, methods=["POST"]),
    Route("/devices", devices),
    Route("/who", remember, methods=["POST"]),
]


@asynccontextmanager
async def a_store(kind: str, hash_keys: bool, tmp_path: Path) -> AsyncIterator[RecordStore]:
    """One store of ``kind`` (Redis too: its keys at rest are test_redis.py's)."""
    if kind == "redis":
        async with redis_factory.store(hash_keys=hash_keys) as redis_store:
            yield redis_store
        return
    opener = {
        "memory": lambda: memory(hash_keys),
        "sqlite": lambda: sqlite(hash_keys, tmp_path),
        "postgres": lambda: postgres(hash_keys),
        "mysql": lambda: mysql(hash_keys),
    }[kind]
    async with opener() as (store, _):
        yield store


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres", "mysql", "redis"])
@pytest.mark.parametrize("hash_keys", [True, False], ids=["hashed", "clear"])
async def test_session_id_is_the_hash_of_the_key_in_every_mode(
    kind: str, hash_keys: bool, tmp_path: Path
) -> None:
    """Issue 28 item 8: with ``hash_keys=False``, ``session.id`` was the key itself (a bearer
    credential the docs call safe to show). It is the key's SHA-256 in both modes, and every
    admin call that takes an id agrees with it."""
    async with a_store(kind, hash_keys, tmp_path) as store:
        key = Key.generate()
        app = make_app(store=store, key=key, routes=ID_ROUTES)

        async def login() -> tuple[str, str]:
            r = await request(app, "POST", "/login", json={"user": "ann"})
            cookie = r.cookie()
            assert r.status == 200 and cookie is not None
            who = await request(
                app, "POST", "/who", cookies={"id": cookie.value}, json={"user": "ann"}
            )
            assert who.status == 200
            shown = (await request(app, "GET", "/whoami", cookies={"id": cookie.value})).json()
            return cookie.value, shown["id"]

        def clear_key(cookie: str) -> str:
            opened = unseal(ContentSecurity.PRIVATE, [key], "id", unquote(cookie))
            assert opened is not None
            return opened[0]

        laptop, laptop_id = await login()
        phone, phone_id = await login()
        tablet, tablet_id = await login()
        for cookie, shown in ((laptop, laptop_id), (phone, phone_id), (tablet, tablet_id)):
            assert shown == hashlib.sha256(clear_key(cookie).encode()).hexdigest()
            assert clear_key(cookie) not in shown
        listed = (await request(app, "GET", "/devices", cookies={"id": laptop})).json()
        assert sorted(listed) == sorted([laptop_id, phone_id, tablet_id])
        # "Sign out my other devices" keeps this one; "end this session" ends it by its id.
        ended = await request(app, "POST", "/end-others", cookies={"id": phone})
        assert ended.json() == {"ended": 2}
        assert (await request(app, "GET", "/whoami", cookies={"id": phone})).json() == {
            "id": phone_id
        }
        for gone in (laptop, tablet):
            assert (await request(app, "GET", "/whoami", cookies={"id": gone})).json() == {
                "id": None
            }
        ended = await request(app, "POST", "/end-this", cookies={"id": phone})
        assert ended.json() == {"ended": True}
        assert (await request(app, "GET", "/whoami", cookies={"id": phone})).json() == {"id": None}
        # A key is never taken for an id.
        other, _ = await login()
        admin = SessionAdmin(store)
        assert await admin.end_session(clear_key(other)) is False
        assert (await request(app, "GET", "/whoami", cookies={"id": other})).json()["id"]
