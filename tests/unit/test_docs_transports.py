"""docs/api-clients.md and docs/named-sessions.md: their examples do what the pages say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.client import request
from tests.docs_examples import Example, close_stores, python_examples, run


def block(page: str, marker: str) -> Example:
    """The one python block of ``docs/<page>`` whose code holds ``marker``."""
    found = [b for b in python_examples() if b.page.name == page and marker in b.code]
    assert len(found) == 1, f"{page}: {len(found)} blocks hold {marker!r}"
    return found[0]


async def test_the_api_client_logs_in_and_out_by_header(tmp_path: Path) -> None:
    app = run(block("api-clients.md", "app = Starlette("), tmp_path)["app"]
    use_the_api = run(block("api-clients.md", "async def use_the_api"), tmp_path)["use_the_api"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
        assert await use_the_api(client) == [{"user": "ada"}, {"user": "ada"}, "", {"user": None}]
    # A browser's login by cookie is a CSRF-checked POST: without its token, refused.
    refused = await request(app, "POST", "/login", json={"user": "eve"})
    assert refused.status == 403 and refused.cookie() is None
    await close_stores(app)


async def test_the_fastapi_example_documents_the_header(tmp_path: Path) -> None:
    api = run(block("api-clients.md", "api = FastAPI()"), tmp_path)["api"]
    schema = (await request(api, "GET", "/openapi.json")).json()
    scheme = schema["components"]["securitySchemes"]["session"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert schema["paths"]["/me"]["get"]["security"] == [{"session": []}]


async def test_the_admin_session_lives_beside_the_default_one(tmp_path: Path) -> None:
    app: Any = run(block("named-sessions.md", "app = Starlette("), tmp_path)["app"]
    first = await request(app, "GET", "/admin/")
    assert first.json() == {"visits": 1, "admin": None}
    own = first.cookie("id")
    assert own is not None
    login = await request(app, "POST", "/admin/login", cookies={"id": own.value})
    admin = login.cookie("admin")
    assert admin is not None and admin.attrs["path"] == "/admin"
    cookies = {"id": own.value, "admin": admin.value}
    assert (await request(app, "GET", "/admin/", cookies=cookies)).json() == {
        "visits": 2,
        "admin": "root",
    }
    ended = await request(app, "POST", "/admin/sign-out-everywhere", cookies=cookies)
    assert ended.json() == {"ended": 1}
    assert (await request(app, "GET", "/admin/", cookies=cookies)).json() == {
        "visits": 3,
        "admin": None,
    }
    await close_stores(app)


async def test_the_fastapi_named_dependency_example_runs(tmp_path: Path) -> None:
    api = run(block("named-sessions.md", "api = FastAPI()"), tmp_path)["api"]
    assert (await request(api, "GET", "/")).json() == {"user": None, "admin": None}
    schema = (await request(api, "GET", "/openapi.json")).json()
    assert set(schema["components"]["securitySchemes"]) == {"session", "admin"}
