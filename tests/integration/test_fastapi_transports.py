"""FastAPI with header transports and named sessions: the dependencies give the right session,
OpenAPI (and so ``/docs``) documents how each session's token travels, and the per-route CSRF
check lets header requests through (issue 26, items 1 and 2)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from sessionware import (
    CookieTransport,
    HeaderTransport,
    Key,
    Session,
    SessionMiddleware,
    csrf_token,
)
from sessionware.integrations.fastapi import CSRFProtected, SessionDep, session_dependency
from sessionware.stores import MemorySessionStore
from tests.client import request

AdminSession = session_dependency("admin")


def make_app(**options: Any) -> FastAPI:
    app = FastAPI()

    @app.post("/count", dependencies=[CSRFProtected])
    async def count(session: SessionDep) -> int:
        session["n"] = session.get("n", 0) + 1
        return int(session["n"])

    @app.get("/token")
    async def token(session: SessionDep) -> str:
        return csrf_token(session)

    app.add_middleware(SessionMiddleware, store=MemorySessionStore(), key=Key.generate(), **options)
    return app


async def schema(app: FastAPI) -> dict[str, Any]:
    response = await request(app, "GET", "/openapi.json")
    assert response.status == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_the_default_session_documents_its_cookie() -> None:
    found = await schema(make_app(lazy=True))
    assert found["components"]["securitySchemes"] == {
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": "id",
            "description": "The 'session' session's cookie.",
        }
    }
    assert found["paths"]["/count"]["post"]["security"] == [{"session": []}]


@pytest.mark.parametrize(
    ("transport", "expected"),
    [
        (HeaderTransport(), {"type": "apiKey", "in": "header", "name": "Authorization"}),
        (
            [CookieTransport(), HeaderTransport(name="X-Session", scheme=None)],
            {"type": "apiKey", "in": "header", "name": "X-Session"},
        ),
        (HeaderTransport(scheme="Bearer"), {"type": "http", "scheme": "bearer"}),
    ],
)
async def test_a_header_transport_is_documented_for_docs_authorize_button(
    transport: Any, expected: dict[str, str]
) -> None:
    app = make_app(transport=transport)
    scheme = (await schema(app))["components"]["securitySchemes"]["session"]
    description = scheme.pop("description")
    assert scheme == expected
    assert "Session-Token" in description
    assert ("cookie `id`" in description) == isinstance(transport, list)
    docs = await request(app, "GET", "/docs")
    assert docs.status == 200 and "/openapi.json" in docs.text


async def test_a_named_session_has_its_own_dependency_and_scheme() -> None:
    app = FastAPI()

    @app.get("/both")
    async def both(session: SessionDep, admin: AdminSession) -> dict[str, Any]:
        assert isinstance(admin, Session) and admin is not session
        session["n"] = session.get("n", 0) + 1
        admin["n"] = admin.get("n", 0) + 10
        return {"session": session["n"], "admin": admin["n"]}

    admin_header = HeaderTransport(name="X-Admin", scheme=None, response_header="X-Admin-Token")
    app.add_middleware(
        SessionMiddleware,
        name="admin",
        store=MemorySessionStore(),
        key=Key.generate(),
        transport=admin_header,
        lazy=True,
    )
    app.add_middleware(SessionMiddleware, store=MemorySessionStore(), key=Key.generate())
    first = await request(app, "GET", "/both", headers=[(b"x-admin", b"")])
    assert first.json() == {"session": 1, "admin": 10}
    cookie, token = first.cookie(), first.header("x-admin-token")
    assert cookie is not None and token
    second = await request(
        app, "GET", "/both", cookies={"id": cookie.value}, headers=[(b"x-admin", token.encode())]
    )
    assert second.json() == {"session": 2, "admin": 20}
    schemes = (await schema(app))["components"]["securitySchemes"]
    assert schemes["session"]["in"] == "cookie"
    assert schemes["admin"]["in"] == "header" and schemes["admin"]["name"] == "X-Admin"
    assert session_dependency("admin") is AdminSession
    assert session_dependency() is SessionDep


async def test_without_its_middleware_a_named_dependency_names_it() -> None:
    app = FastAPI()

    @app.get("/")
    async def page(admin: AdminSession) -> int:
        return len(admin)  # pragma: no cover - never reached

    app.add_middleware(SessionMiddleware, store=MemorySessionStore(), key=Key.generate())
    response = await request(app, "GET", "/")
    assert response.status == 500 and isinstance(response.exception, RuntimeError)
    assert "no session named 'admin'" in str(response.exception)


async def test_the_route_csrf_check_lets_header_requests_through() -> None:
    app = make_app(transport=[CookieTransport(), HeaderTransport()])
    assert (await request(app, "POST", "/count")).status == 403  # by cookie: checked
    by_header = await request(app, "POST", "/count", headers=[(b"authorization", b"Session")])
    assert by_header.status == 200 and by_header.json() == 1
    token = by_header.header("session-token")
    assert token
    again = await request(
        app, "POST", "/count", headers=[(b"authorization", f"Session {token}".encode())]
    )
    assert again.json() == 2
