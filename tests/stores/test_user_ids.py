"""Issue 28 item 4: one limit on user ids, checked at ``bind_user`` and when a record is read.

A record another writer left with a user id no store's index can hold (NUL: PostgreSQL and
MariaDB refuse it; over 255 characters: MariaDB's ``VARCHAR(255)``) is unreadable state: an
empty session and one WARNING, never a 503 at the next write. A user id at the limit works on
every store, sign-out-everywhere included.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from types import ModuleType
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionware import Key, SessionMiddleware, get_admin, get_session
from sessionware.crypto import ContentSecurity, seal
from sessionware.repository import Repository
from sessionware.session import MAX_USER_ID
from sessionware.stores import ABSENT, generate_session_key
from tests.client import request
from tests.factories import memory, mysql, postgres

KEY = Key.generate()


@pytest.fixture(params=[memory, postgres, mysql], ids=lambda m: m.__name__.rsplit(".", 1)[1])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    factory: ModuleType = request.param
    async with factory.store() as opened:
        yield opened


async def show(request: Request) -> Response:
    return JSONResponse(dict(get_session(request)))


async def write(request: Request) -> Response:
    session = get_session(request)
    session["n"] = session.get("n", 0) + 1
    return JSONResponse(dict(session))


async def login(request: Request) -> Response:
    session = get_session(request)
    session.renew()
    session.bind_user((await request.json())["user"])
    return JSONResponse({})


async def sign_out_everywhere(request: Request) -> Response:
    user = (await request.json())["user"]
    return JSONResponse({"ended": await get_admin(request).end_all_for(user)})


def app_for(store: Any) -> Starlette:
    routes = [
        Route("/", show),
        Route("/write", write, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/everywhere", sign_out_everywhere, methods=["POST"]),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(SessionMiddleware, store=store, key=KEY)]
    )


async def plant(store: Any, user: str) -> str:
    """A live record bound to ``user``, written behind the store's back; its cookie value."""
    key = generate_session_key()
    now = int(time.time())
    record = {"v": 1, "state": {"n": 41}, "user": user, "created": now, "expires": now + 3600}
    data = json.dumps(record).encode()  # NUL spelled \u0000: what a JSON writer stores
    assert await store.put(Repository(store).id_of(key), data, timedelta(hours=1), expect=ABSENT)
    return seal(ContentSecurity.PRIVATE, KEY, "id", key)


@pytest.mark.parametrize("user", ["a\x00b", "x" * (MAX_USER_ID + 1), "tab\there"])
async def test_a_stored_user_id_no_store_can_hold_is_unreadable_state(
    store: Any, user: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_for(store)
    cookie = await plant(store, user)
    caplog.set_level(logging.WARNING, logger="sessionware")
    shown = await request(app, "GET", "/", cookies={"id": cookie})
    assert shown.status == 200 and shown.json() == {}
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "unreadable state" in warning.getMessage() and cookie not in warning.getMessage()
    written = await request(app, "POST", "/write", cookies={"id": cookie})
    assert written.status == 200 and written.json() == {"n": 1}
    new = written.cookie()
    assert new is not None and new.value != cookie


async def test_a_user_id_at_the_limit_is_bound_listed_and_signed_out(store: Any) -> None:
    user = "é" * MAX_USER_ID
    app = app_for(store)
    login_cookie = (await request(app, "POST", "/login", json={"user": user})).cookie()
    assert login_cookie is not None
    cookie = login_cookie.value
    assert (await request(app, "POST", "/write", cookies={"id": cookie})).json() == {"n": 1}
    ended = await request(app, "POST", "/everywhere", json={"user": user})
    assert ended.status == 200 and ended.json() == {"ended": 1}
    assert (await request(app, "GET", "/", cookies={"id": cookie})).json() == {}
