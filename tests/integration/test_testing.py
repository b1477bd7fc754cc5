"""sessionware.testing: seeding and reading sessions in an app's own tests, without logging in."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from litestar import Litestar, get
from litestar import Request as LitestarRequest
from litestar.middleware import DefineMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionware import ContentSecurity, Key, SessionInsertError, SessionMiddleware
from sessionware.integrations.fastapi import SessionDep
from sessionware.stores import CookieSessionStore, MemorySessionStore, SessionStore
from sessionware.testing import find_session_middleware, make_session_cookie, read_session
from tests.client import request

KEY = Key.generate()


async def whoami(request: Request) -> Response:
    request.session["seen"] = request.session.get("seen", 0) + 1
    return JSONResponse(dict(request.session))


def starlette_app(store: SessionStore, **options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/whoami", whoami)],
        middleware=[Middleware(SessionMiddleware, store=store, key=KEY, **options)],
    )


def fastapi_app(store: SessionStore) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, store=store, key=KEY)

    @app.get("/whoami")
    async def me(session: SessionDep) -> dict[str, Any]:
        session["seen"] = session.get("seen", 0) + 1
        return dict(session)

    return app


@pytest.mark.parametrize("make", [starlette_app, fastapi_app], ids=["starlette", "fastapi"])
async def test_a_seeded_session_is_what_the_app_sees(make: Any) -> None:
    store = MemorySessionStore()
    app = make(store)
    assert app.middleware_stack is None  # Starlette builds it on the first request
    name, value = await make_session_cookie(app, {"user_id": 42, "roles": ["admin"]})
    assert (name, len(store)) == ("id", 1)
    r = await request(app, "GET", "/whoami", cookies={name: value})
    assert r.json() == {"user_id": 42, "roles": ["admin"], "seen": 1}
    # Now the stack is built: the helpers find the very middleware serving requests.
    serving: Any = app.middleware_stack
    while not isinstance(serving, SessionMiddleware):
        serving = serving.app
    assert find_session_middleware(app) is serving
    cookie = r.cookie()
    assert cookie is not None
    assert await read_session(app, cookie.value) == {"user_id": 42, "roles": ["admin"], "seen": 1}


async def test_cookie_store_and_signed_cookies_follow_the_apps_configuration() -> None:
    app = starlette_app(
        CookieSessionStore(), content_security=ContentSecurity.SIGNED, cookie_name="sid"
    )
    name, value = await make_session_cookie(app, {"cart": [{"sku": "a-1", "qty": 2}]})
    assert name == "sid"
    r = await request(app, "GET", "/whoami", cookies={name: value})
    assert r.json() == {"cart": [{"sku": "a-1", "qty": 2}], "seen": 1}
    assert await read_session(app, value) == {"cart": [{"sku": "a-1", "qty": 2}]}


async def test_a_middleware_instance_or_a_wrapped_app_serves_too() -> None:
    @get("/whoami")
    async def litestar_whoami() -> str:
        return "ok"

    middleware = SessionMiddleware(Litestar([litestar_whoami]), store=MemorySessionStore(), key=KEY)
    name, value = await make_session_cookie(middleware, {"a": 1})
    assert name == "id" and await read_session(middleware, value) == {"a": 1}

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        await middleware(scope, receive, send)

    outer.app = middleware  # type: ignore[attr-defined]  # as ASGI wrappers expose it
    assert find_session_middleware(outer) is middleware


async def test_a_litestar_app_with_define_middleware() -> None:
    """Issue 28 item 14: ``Litestar(middleware=[DefineMiddleware(SessionMiddleware, ...)])``
    was not found ("no sessionware.SessionMiddleware found in Litestar")."""

    @get("/whoami")
    async def litestar_whoami(request: LitestarRequest[Any, Any, Any]) -> dict[str, Any]:
        request.session["seen"] = request.session.get("seen", 0) + 1
        return dict(request.session)

    store = MemorySessionStore()
    app = Litestar(
        [litestar_whoami], middleware=[DefineMiddleware(SessionMiddleware, store=store, key=KEY)]
    )
    name, value = await make_session_cookie(app, {"user_id": 42})
    assert (name, len(store)) == ("id", 1)
    r = await request(app, "GET", "/whoami", cookies={name: value})
    assert r.json() == {"user_id": 42, "seen": 1}
    cookie = r.cookie()
    assert cookie is not None
    assert await read_session(app, cookie.value) == {"user_id": 42, "seen": 1}


async def test_explicit_store_and_key_need_no_app() -> None:
    store = MemorySessionStore()
    name, value = await make_session_cookie(None, {"a": 1}, store=store, key=KEY)
    app = starlette_app(store)
    r = await request(app, "GET", "/whoami", cookies={name: value})
    assert r.json() == {"a": 1, "seen": 1}
    assert await read_session(None, value, store=store, key=KEY) == {"a": 1, "seen": 1}
    with pytest.raises(TypeError, match="store= and key="):
        await make_session_cookie(None, {"a": 1}, store=store)


async def test_overrides_apply_on_top_of_the_apps_configuration() -> None:
    app = starlette_app(MemorySessionStore())
    other = MemorySessionStore()
    _, value = await make_session_cookie(app, {"a": 1}, store=other)
    assert len(other) == 1
    assert await read_session(app, value) == {}  # the app's own store never saw it
    assert await read_session(app, value, store=other) == {"a": 1}


async def test_read_session_of_an_ended_session_is_empty_and_of_a_foreign_cookie_raises() -> None:
    store = MemorySessionStore()
    app = starlette_app(store)
    _, value = await make_session_cookie(app, {"a": 1})
    assert await read_session(app, "") == {}
    [key] = list(store._records)
    await store.delete(key)  # type: ignore[arg-type]
    assert await read_session(app, value) == {}
    _, foreign = await make_session_cookie(None, {"a": 1}, store=store, key=Key.generate())
    with pytest.raises(ValueError, match="does not open with the app's key"):
        await read_session(app, foreign)


async def test_seeding_checks_values_and_finding_needs_a_middleware() -> None:
    app = starlette_app(MemorySessionStore())
    with pytest.raises(SessionInsertError, match="'when'"):
        await make_session_cookie(app, {"when": object()})
    with pytest.raises(LookupError, match=r"no sessionware\.SessionMiddleware found in Starlette"):
        find_session_middleware(Starlette())
