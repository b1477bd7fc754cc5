"""Every ```python block of README.md and docs/ runs (issue 16 item 11), and the examples that
make an app do what their text says when requests go through them."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.client import request
from tests.docs_examples import (
    PAGES,
    Example,
    blocks,
    close_stores,
    example,
    python_examples,
    run,
)

EXAMPLES = python_examples()
LANGUAGES = {"python", "sh", "console", "sql", "json", "diff", "js", "promql"}


def test_every_fenced_block_names_its_language() -> None:
    """So no Python hides in an untagged block that the runner below would not see."""
    for page in PAGES:
        for block in blocks(page):
            assert block.language in LANGUAGES, f"{block.name}: fence language {block.language!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_point_only_at_what_users_have(page: Path) -> None:
    """Issue 16 item 11: no project-internal notes; no advice to edit this repository's tests."""
    text = page.read_text(encoding="utf-8")
    for phrase in ("../shared/", "DESIGN.md", "closing note"):
        assert phrase not in text, f"{page.name} points at {phrase!r}, which users do not have"
    if page.parent.name == "docs":
        assert "tests/factories" not in text, f"{page.name} tells users to edit tests/factories"


def test_the_runner_sees_the_examples() -> None:
    names = {b.page.name for b in EXAMPLES}
    assert {"README.md", "quickstart.md", "stores.md", "lifecycle.md", "security.md"} <= names
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("block", EXAMPLES, ids=lambda b: b.name)
async def test_example_runs(block: Example, tmp_path: Path) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"{block.name}: {block.skip_reason}")
    namespace = run(block, tmp_path)
    await close_stores(*namespace.values())


async def count_twice(app: Any, path: str) -> None:
    """A counter example: the first request makes the session, the second one reads it back."""
    first = await request(app, "GET", path)
    assert first.status == 200, first.text
    assert first.json() == {"n": 1}
    cookie = first.cookie()
    assert cookie is not None and "secure" in cookie.attrs
    second = await request(app, "GET", path, cookies={cookie.name: cookie.value})
    assert second.json() == {"n": 2}


@pytest.mark.parametrize(
    ("page", "section", "path"),
    [
        ("README.md", "Starlette", "/"),
        ("docs/quickstart.md", "Starlette", "/count"),
        ("docs/quickstart.md", "Raw ASGI", "/"),
    ],
)
async def test_the_counter_examples_count(
    page: str, section: str, path: str, tmp_path: Path
) -> None:
    app = run(example(page, section), tmp_path)["app"]
    try:
        await count_twice(app, path)
    finally:
        await close_stores(app)


async def test_the_counters_and_carts_example_loses_nothing_under_concurrency(
    tmp_path: Path,
) -> None:
    app = run(example("docs/concurrency.md", "Counters, carts and rate limits"), tmp_path)["app"]
    try:
        first = await request(app, "GET", "/visit")
        cookie = first.cookie()
        assert first.json() == {"visits": 1} and cookie is not None
        sent = {cookie.name: cookie.value}
        visits = await asyncio.gather(
            *(request(app, "GET", "/visit", cookies=sent) for _ in range(9))
        )
        assert all(r.status == 200 for r in visits)
        carts = await asyncio.gather(
            *(request(app, "GET", f"/cart?item={item}", cookies=sent) for item in "abc")
        )
        assert all(r.status == 200 for r in carts)
        last = await request(app, "GET", "/visit", cookies=sent)
        assert last.json() == {"visits": 11}
        cart = (await request(app, "GET", "/cart?item=d", cookies=sent)).json()["cart"]
        assert sorted(cart[:3]) == ["a", "b", "c"] and cart[3] == "d"
    finally:
        await close_stores(app)


async def test_the_flash_example_shows_its_messages_after_the_redirect(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from sessionware import Key, SessionMiddleware
    from sessionware.stores import MemorySessionStore

    code = run(example("docs/quickstart.md", "Flash messages"), tmp_path)
    app = Starlette(
        routes=[Route("/save", code["save"], methods=["POST"]), Route("/", code["home"])],
        middleware=[Middleware(SessionMiddleware, store=MemorySessionStore(), key=Key.generate())],
    )
    saved = await request(app, "POST", "/save")
    cookie = saved.cookie()
    assert saved.status == 303 and cookie is not None
    page = await request(app, "GET", "/", cookies={cookie.name: cookie.value})
    assert page.json() == ["Saved.", "Card declined."]


def login_app() -> Any:
    """An app with a login that renews the session (as a real login must) and a signed-in page."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sessionware import Key, SessionMiddleware, get_session
    from sessionware.stores import MemorySessionStore

    async def login(request: Request) -> JSONResponse:
        session = get_session(request)
        await session.load()
        session.renew()
        session["user"] = (await request.form())["user"]
        return JSONResponse({})

    async def profile(request: Request) -> JSONResponse:
        if "user" not in request.session:
            return JSONResponse({}, status_code=401)
        return JSONResponse({"user": request.session["user"]})

    return Starlette(
        routes=[Route("/login", login, methods=["POST"]), Route("/profile", profile)],
        middleware=[Middleware(SessionMiddleware, store=MemorySessionStore(), key=Key.generate())],
    )


async def test_the_testing_example_passes_against_an_app(tmp_path: Path) -> None:
    """Issue 28 item 14: the page showed ``AsyncClient(cookies={...})``, which keeps the seeded
    cookie beside the one a login sets and sends both: the next request was a 401."""
    code = run(
        example("docs/testing.md", "Seed a session, then let the client keep the cookie"), tmp_path
    )
    await code["test_login_keeps_the_cart"](login_app())


async def test_a_client_given_cookies_at_construction_sends_the_old_one_after_a_login() -> None:
    """What the page warns against, so the warning stays true."""
    import httpx

    from sessionware.testing import make_session_cookie

    app = login_app()
    name, value = await make_session_cookie(app, {"cart": ["apple"]})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="https://app.test", cookies={name: value}
    ) as client:
        assert (await client.post("/login", data={"user": "ada"})).status_code == 200
        assert (await client.get("/profile")).status_code == 401
        assert len([cookie for cookie in client.cookies.jar if cookie.name == name]) == 2


async def test_the_lazy_loading_handler_loads_the_session(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from sessionware import Key, SessionMiddleware
    from sessionware.stores import MemorySessionStore
    from sessionware.testing import make_session_cookie

    handlers = [
        b for b in EXAMPLES if b.page.name == "lifecycle.md" and "async def handler" in b.code
    ]
    assert len(handlers) == 1
    store = MemorySessionStore()
    app = Starlette(
        routes=[Route("/", run(handlers[0], tmp_path)["handler"])],
        middleware=[Middleware(SessionMiddleware, store=store, key=Key.generate(), lazy=True)],
    )
    name, value = await make_session_cookie(app, {"user_id": 7})
    response = await request(app, "GET", "/", cookies={name: value})
    assert response.json() == {"user": 7}


async def test_the_websocket_example_keeps_its_session_without_a_cookie_on_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/servers.md: the page starts the session over HTTP; the socket's writes are saved
    without any header on ``websocket.accept`` (what granian and daphne need)."""
    from tests.client import websocket

    monkeypatch.chdir(tmp_path)  # the store opens its relative "sessions.db" on first use
    app = run(example("docs/servers.md", "WebSockets on granian and daphne"), tmp_path)["app"]
    try:
        refused = await websocket(app, "/chat")
        assert refused[-1]["code"] == 1008
        page = await request(app, "GET", "/")
        cookie = page.cookie()
        assert cookie is not None
        for messages in (1, 2):
            sent = await websocket(app, "/chat", cookies={cookie.name: cookie.value})
            assert sent[0]["type"] == "websocket.accept"
            assert not sent[0].get("headers")  # nothing for the server to carry
            assert sent[1]["text"] == f'{{"nickname":"guest","messages":{messages}}}'
    finally:
        await close_stores(app)


@pytest.mark.parametrize("server_side", [True, False], ids=["memory", "cookie"])
async def test_the_remember_me_and_expired_examples_do_what_they_say(
    server_side: bool, tmp_path: Path
) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from sessionware import BrowserSession, Key, SessionMiddleware
    from sessionware.stores import CookieSessionStore, MemorySessionStore

    login = run(example("docs/lifecycle.md", 'A "remember me" login'), tmp_path)["login"]
    home = run(example("docs/lifecycle.md", '"Your session expired" or a new visitor'), tmp_path)
    now = [1_800_000_000.0]
    lifecycle = BrowserSession(state_ttl=timedelta(hours=1), max_age=timedelta(days=60))
    app = Starlette(
        routes=[Route("/login", login, methods=["POST"]), Route("/", home["home"])],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=MemorySessionStore() if server_side else CookieSessionStore(),
                key=Key.generate(),
                lifecycle=lifecycle,
                clock=lambda: now[0],
            )
        ],
    )
    form = [(b"content-type", b"application/x-www-form-urlencoded")]

    async def log_in(body: bytes) -> dict[str, str]:
        response = await request(app, "POST", "/login", headers=form, body=body)
        cookie = response.cookie()
        assert response.status == 303 and cookie is not None
        return {cookie.name: cookie.value} | {"max-age": str(cookie.max_age)}

    visitor = await request(app, "GET", "/")
    assert (visitor.status, visitor.text) == (401, "Welcome! Please sign in.")
    remembered = await log_in(b"user=ada&remember=on")
    assert remembered.pop("max-age") == str(30 * 86400)
    plain = await log_in(b"user=bob")
    assert plain.pop("max-age") == "None"
    now[0] += 2 * 3600  # past the middleware's idle TTL, within the remembered 30 days
    page = await request(app, "GET", "/", cookies=remembered)
    assert page.text == "Hello ada, signed in until 08:00 UTC."  # 30 days after the login
    expired = await request(app, "GET", "/", cookies=plain)
    assert expired.status == 401 and "expired after a while without activity" in expired.text


async def test_the_back_channel_logout_example_ends_the_providers_sessions(
    tmp_path: Path,
) -> None:
    """docs/lifecycle.md: two logins through the provider's session sid-1, one through sid-2;
    a logout token for sid-1 ends the first two. The token check and the login are the app's
    OpenID Connect library's: stood in for by functions that read the test's claims."""
    code = run(
        example(
            "docs/lifecycle.md",
            "Sessions found by other indexes: OpenID Connect back-channel logout",
        ),
        tmp_path,
    )
    app = code["app"]

    async def finish_login(request: Any) -> dict[str, str]:
        return {"sub": request.query_params["sub"], "sid": request.query_params["sid"]}

    def verify_logout_token(token: str) -> dict[str, str]:
        if not token.startswith("valid:"):
            raise ValueError("bad token")
        return dict([token.removeprefix("valid:").split("=")])

    code["finish_login"], code["verify_logout_token"] = finish_login, verify_logout_token
    cookies: dict[str, dict[str, str]] = {}
    for browser, sid in (("laptop", "sid-1"), ("phone", "sid-1"), ("tablet", "sid-2")):
        login = await request(app, "GET", f"/callback?sub=ada&sid={sid}")
        cookie = login.cookie()
        assert login.status == 200 and cookie is not None
        cookies[browser] = {cookie.name: cookie.value}
    logout = "/backchannel-logout"
    bad = await request(app, "POST", logout, form={"logout_token": "forged"})
    assert bad.status == 400
    done = await request(app, "POST", logout, form={"logout_token": "valid:sid=sid-1"})
    assert done.status == 200
    for browser, status in (("laptop", 401), ("phone", 401), ("tablet", 200)):
        assert (await request(app, "GET", "/me", cookies=cookies[browser])).status == status
    await close_stores(app)
