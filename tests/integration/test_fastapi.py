"""The FastAPI dependencies: SessionDep (lazy loading, a missing middleware) and session_model."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware

from sessionware import Key, SessionMiddleware
from sessionware.integrations.fastapi import SessionDep, session_model
from sessionware.stores import MemorySessionStore, Record, StoreError
from sessionware.testing import make_session_cookie
from tests.client import RecordingStore, request

KEY = Key.generate()


class User(BaseModel):
    user_id: int
    name: str


if TYPE_CHECKING:  # type checkers cannot read a call as an annotation
    CurrentUser = User
else:
    CurrentUser = session_model(User)


def make_app(store: Any, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, key=KEY, **options)

    @app.get("/count")
    async def count(session: SessionDep) -> int:
        session["n"] = session.get("n", 0) + 1
        return int(session["n"])

    @app.get("/untouched")
    async def untouched() -> str:
        return "ok"

    @app.get("/me")
    async def me(user: CurrentUser) -> dict[str, Any]:
        return user.model_dump()

    @app.get("/raw")
    async def raw(request: Request) -> dict[str, Any]:
        return dict(request.session)

    return app


async def test_lazy_sessions_are_loaded_by_the_dependency_and_only_there() -> None:
    store = RecordingStore(MemorySessionStore())
    app = make_app(store, lazy=True)
    cookie = (await request(app, "GET", "/count")).cookie()
    assert cookie is not None and store.calls == ["put"]
    r = await request(app, "GET", "/untouched", cookies={"id": cookie.value})
    assert r.json() == "ok" and store.calls == ["put"]  # no load for a handler without it
    r = await request(app, "GET", "/count", cookies={"id": cookie.value})
    assert r.json() == 2 and store.calls == ["put", "get", "put"]


class LoadFails(RecordingStore):
    async def get(self, id: str) -> Record | None:
        raise StoreError("the store is down")


async def test_a_lazy_load_failure_in_the_dependency_is_an_opaque_503() -> None:
    store = MemorySessionStore()
    cookie = (await request(make_app(store), "GET", "/count")).cookie()
    assert cookie is not None
    app = make_app(LoadFails(store), lazy=True)
    r = await request(app, "GET", "/count", cookies={"id": cookie.value})
    assert r.status == 503 and r.body == b"" and r.cookie() is None


async def test_without_the_middleware_the_dependency_says_how_to_add_it() -> None:
    app = FastAPI()

    @app.get("/count")
    async def count(session: SessionDep) -> int:
        return len(session)

    r = await request(app, "GET", "/count")
    assert r.status == 500 and isinstance(r.exception, RuntimeError)
    message = str(r.exception)
    assert "SessionMiddleware is not installed" in message
    assert "app.add_middleware(SessionMiddleware, store=..., key=...)" in message


async def test_with_starlettes_own_middleware_the_dependency_names_the_mix_up() -> None:
    app = FastAPI()
    app.add_middleware(StarletteSessionMiddleware, secret_key="not-sessionware")

    @app.get("/count")
    async def count(session: SessionDep) -> int:
        return len(session)

    r = await request(app, "GET", "/count")
    assert r.status == 500 and "Starlette's own SessionMiddleware" in str(r.exception)


async def test_session_model_validates_the_whole_session() -> None:
    store = MemorySessionStore()
    app = make_app(store, lazy=True)
    name, value = await make_session_cookie(app, {"user_id": 7, "name": "ada", "theme": "dark"})
    r = await request(app, "GET", "/me", cookies={name: value})
    assert r.status == 200 and r.json() == {"user_id": 7, "name": "ada"}


async def test_session_model_answers_401_for_a_session_that_lacks_its_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(MemorySessionStore())
    with caplog.at_level(logging.DEBUG, logger="sessionware"):
        r = await request(app, "GET", "/me")
    assert r.status == 401 and r.json() == {"detail": "Not authenticated"}
    assert r.header("www-authenticate") == "Cookie"
    assert [rec.levelno for rec in caplog.records] == [logging.DEBUG]
    assert "user_id, name" in caplog.records[0].getMessage()


async def test_session_model_logs_a_misshapen_session_without_its_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(MemorySessionStore())
    name, value = await make_session_cookie(app, {"user_id": "secret-token", "name": "ada"})
    with caplog.at_level(logging.DEBUG, logger="sessionware"):
        r = await request(app, "GET", "/me", cookies={name: value})
    assert r.status == 401
    [record] = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert "does not fit User: user_id" in record.getMessage()
    assert "secret-token" not in caplog.text


def test_session_model_takes_only_pydantic_models() -> None:
    with pytest.raises(TypeError, match="BaseModel subclass"):
        session_model(dict)  # type: ignore[type-var]


async def test_request_session_and_session_dep_are_the_same_session() -> None:
    app = make_app(MemorySessionStore())
    cookie = (await request(app, "GET", "/count")).cookie()
    assert cookie is not None
    r = await request(app, "GET", "/raw", cookies={"id": cookie.value})
    assert r.json() == {"n": 1}
