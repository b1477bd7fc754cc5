"""Device-bound sessions in a real browser: headless Chromium (Debian's) against sessionware.

A Starlette app with ``SessionMiddleware(device_binding=DeviceBinding())`` is served by uvicorn
over HTTPS on a free loopback port (a certificate made here, pinned for Chromium by its SPKI).
With DBSC on: login registers the device, the credential cookie is deleted, the next page is
held while Chromium refreshes through a challenge, and arrives with a new credential; DevTools
reports each step; after logout the refresh is told to stop. With DBSC off: nothing registers and
the session is a normal one. ``pytest -s`` prints the exchange the server saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from playwright.sync_api import BrowserContext, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sessionware import DeviceBinding, Key, SessionMiddleware, get_session
from sessionware.stores import MemorySessionStore
from tests.integration.https_server import (
    CHROMIUM,
    Certificate,
    chromium_args,
    make_certificate,
    serve_https,
)
from tests.services import require_executable

REGISTER = "/.well-known/sessionware/dbsc/register"
REFRESH = "/.well-known/sessionware/dbsc/refresh"
WATCHED_REQUEST = ("secure-session-response", "sec-secure-session-id")
WATCHED_RESPONSE = ("secure-session-registration", "secure-session-challenge")


class Recorder:
    """An ASGI wrapper that notes each exchange's DBSC headers, cookies and JWTs."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.exchange: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/favicon.ico":
            await self.app(scope, receive, send)
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        entry: dict[str, Any] = {"request": f"{scope['method']} {scope['path']}"}
        entry["cookies sent"] = sorted(
            part.split("=")[0].strip() for part in headers.get("cookie", "").split(";") if part
        )
        for name in WATCHED_REQUEST:
            if name in headers:
                entry[name] = headers[name]
        token = headers.get("secure-session-response", "").strip('"')
        if token:
            entry["jwt header"] = jwt.get_unverified_header(token)
            entry["jwt payload"] = jwt.decode(token, options={"verify_signature": False})
        body = bytearray()

        async def recording(message: Any) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                for name, value in message.get("headers", []):
                    name = name.decode()
                    if name in WATCHED_RESPONSE:
                        entry[name] = value.decode()
                    elif name == "set-cookie":
                        first = value.decode().split(";")[0]
                        entry.setdefault("set-cookie", []).append(
                            value.decode().replace(first, first.split("=")[0] + "=<sealed>")
                        )
            elif message["type"] == "http.response.body" and scope["path"].startswith("/.well"):
                body.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, recording)
        if body:
            entry["body"] = json.loads(body)
        self.exchange.append(entry)

    def requests(self) -> list[tuple[str, int]]:
        return [(e["request"], e.get("status", 0)) for e in self.exchange]


def make_app() -> Recorder:
    async def login(request: Request) -> HTMLResponse:
        session = get_session(request)
        session.renew()
        session.bind_user("alice")
        session.bind_device()
        return HTMLResponse("<p id=who>signed in</p>")

    async def me(request: Request) -> HTMLResponse:
        return HTMLResponse(f"<p id=who>{get_session(request).user_id or 'nobody'}</p>")

    async def form(request: Request) -> HTMLResponse:
        return HTMLResponse("<form method=post action=/login-form><button>Sign in</button></form>")

    async def login_form(request: Request) -> Response:
        session = get_session(request)
        session.renew()
        session.bind_user("alice")
        session.bind_device()
        return RedirectResponse("/me", status_code=303)

    async def renew(request: Request) -> HTMLResponse:
        get_session(request).renew()
        return HTMLResponse("<p id=who>renewed</p>")

    async def logout(request: Request) -> HTMLResponse:
        get_session(request).purge()
        return HTMLResponse("<p id=who>signed out</p>")

    app = Starlette(
        routes=[
            Route("/login", login),
            Route("/form", form),
            Route("/login-form", login_form, methods=["POST"]),
            Route("/me", me),
            Route("/renew", renew),
            Route("/logout", logout),
        ],
    )
    return Recorder(
        SessionMiddleware(
            app,
            store=MemorySessionStore(),
            key=Key.generate(),
            device_binding=DeviceBinding(),
        )
    )


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return make_certificate(tmp_path)


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium (never Playwright's download): skipped if absent, failed under CI."""
    require_executable("Chromium", CHROMIUM)
    return CHROMIUM


def wait_for(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cookie_value(context: BrowserContext, name: str) -> str | None:
    found = [c["value"] for c in context.cookies() if c["name"] == name]
    return found[0] if found else None


def event_kind(event: dict[str, Any]) -> str:
    return next(key for key in event if key.endswith("EventDetails"))


def test_register_expire_and_refresh_through_a_challenge(
    chromium: str, certificate: Certificate
) -> None:
    app = make_app()
    events: list[dict[str, Any]] = []
    with serve_https(app, certificate) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=chromium_args(certificate)
        )
        try:
            context = browser.new_context()
            context.set_default_timeout(15_000)
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.on("Network.deviceBoundSessionEventOccurred", lambda e: events.append(e))
            cdp.send("Network.enable")
            cdp.send("Network.enableDeviceBoundSessions", {"enable": True})

            # 1. Login asks for a binding; Chromium registers a key and gets the credential.
            page.goto(base + "/login")
            wait_for(lambda: cookie_value(context, "id-bound"), "the credential cookie")
            first_credential = cookie_value(context, "id-bound")
            session_cookie = cookie_value(context, "id")
            wait_for(
                lambda: any(event_kind(e) == "creationEventDetails" for e in events),
                "DevTools to report the new session",
            )

            # 2. The credential lapses (deleted, as waiting out Max-Age would be slow): the next
            # page is held while Chromium refreshes through a challenge, then sent with it.
            context.clear_cookies(name="id-bound")
            page.goto(base + "/me")
            assert page.locator("#who").inner_text() == "alice"
            second_credential = cookie_value(context, "id-bound")
            assert second_credential and second_credential != first_credential
            assert cookie_value(context, "id") == session_cookie
            wait_for(
                lambda: (
                    {"challengeEventDetails", "refreshEventDetails"}
                    <= {event_kind(e) for e in events}
                ),
                "DevTools to report the challenge and the refresh",
            )

            # 3. Renewal changes the key and keeps the binding: the next refresh still works.
            page.goto(base + "/renew")
            assert cookie_value(context, "id") != session_cookie
            context.clear_cookies(name="id-bound")
            page.goto(base + "/me")
            assert page.locator("#who").inner_text() == "alice"
            assert cookie_value(context, "id-bound") not in (None, second_credential)

            # 4. Logout purges the session: the next refresh is told to stop.
            page.goto(base + "/logout")
            context.clear_cookies(name="id-bound")
            page.goto(base + "/me")
            assert page.locator("#who").inner_text() == "nobody"
            wait_for(
                lambda: ("POST " + REFRESH, 200) in app.requests()[-3:],
                "the refresh after logout",
            )
            time.sleep(2)  # DevTools events arrive 1-3 s late
        finally:
            browser.close()
    print(json.dumps(app.exchange, indent=1))
    print(json.dumps(events, indent=1))

    requests = app.requests()
    registration = requests.index(("POST " + REGISTER, 200))
    challenge = requests.index(("POST " + REFRESH, 403))
    refreshed = requests.index(("POST " + REFRESH, 200))
    held = requests.index(("GET /me", 200))
    renewed = requests.index(("GET /renew", 200))
    assert requests[renewed + 1 : renewed + 4] == [
        ("POST " + REFRESH, 403),
        ("POST " + REFRESH, 200),
        ("GET /me", 200),
    ], "after renewal the device refreshes the new key's session"
    assert requests[0] == ("GET /login", 200)
    assert registration < challenge < refreshed == held - 1

    login, register = app.exchange[0], app.exchange[registration]
    assert login["secure-session-registration"].startswith(
        f'(ES256 RS256);path="{REGISTER}";challenge="'
    )
    assert register["cookies sent"] == ["id"]
    assert register["jwt header"]["typ"] == "dbsc+jwt"
    assert register["jwt header"]["alg"] in ("ES256", "RS256")
    assert set(register["jwt header"]["jwk"]) >= {"kty"}
    assert register["jwt payload"]["jti"] in login["secure-session-registration"]
    sid = register["body"]["session_identifier"]
    assert register["body"]["credentials"][0]["name"] == "id-bound"

    ask, answer = app.exchange[challenge], app.exchange[refreshed]
    assert ask["cookies sent"] == ["id"], "the session cookie finds the record"
    assert ask["sec-secure-session-id"] == sid
    assert ask["secure-session-challenge"].endswith(f';id="{sid}"')
    assert "jwk" not in answer["jwt header"] and answer["jwt header"]["typ"] == "dbsc+jwt"
    assert f'"{answer["jwt payload"]["jti"]}"' in ask["secure-session-challenge"]
    assert app.exchange[held]["cookies sent"] == ["id", "id-bound"]

    ended = [e for e in app.exchange[held + 1 :] if e["request"] == "POST " + REFRESH]
    assert ended and ended[-1]["body"] == {"session_identifier": sid, "continue": False}

    by_kind = {event_kind(e): e for e in events}
    assert by_kind["creationEventDetails"]["succeeded"] is True
    assert by_kind["creationEventDetails"]["sessionId"] == sid
    new_session = by_kind["creationEventDetails"]["creationEventDetails"]["newSession"]
    assert new_session["cookieCravings"][0]["name"] == "id-bound"
    assert by_kind["challengeEventDetails"]["succeeded"] is True
    refreshes = [e for e in events if event_kind(e) == "refreshEventDetails"]
    assert [e["succeeded"] for e in refreshes] == [True, True, False]
    assert refreshes[0]["refreshEventDetails"]["refreshResult"] == "Refreshed"
    # After logout: the server asked to end it, and Chromium did.
    assert refreshes[-1]["refreshEventDetails"]["fetchResult"] == "ServerRequestedTermination"
    assert by_kind["terminationEventDetails"]["terminationEventDetails"] == {
        "deletionReason": "ServerRequested"
    }


def test_without_dbsc_nothing_registers_and_the_session_is_normal(
    chromium: str, certificate: Certificate
) -> None:
    app = make_app()
    with serve_https(app, certificate) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=chromium_args(certificate, dbsc=False)
        )
        try:
            context = browser.new_context()
            context.set_default_timeout(15_000)
            page = context.new_page()
            page.goto(base + "/login")
            assert page.locator("#who").inner_text() == "signed in"
            time.sleep(1.5)  # time enough for a registration, had there been one
            page.goto(base + "/me")
            assert page.locator("#who").inner_text() == "alice"
            assert [c["name"] for c in context.cookies()] == ["id"]
        finally:
            browser.close()
    assert app.requests() == [("GET /login", 200), ("GET /me", 200)]


def test_registration_on_a_redirect_after_a_form_post(
    chromium: str, certificate: Certificate
) -> None:
    """The usual login shape, POST then 303: Chromium registers from the redirect response."""
    app = make_app()
    with serve_https(app, certificate) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=chromium_args(certificate)
        )
        try:
            context = browser.new_context()
            context.set_default_timeout(15_000)
            page = context.new_page()
            page.goto(base + "/form")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/me")
            assert page.locator("#who").inner_text() == "alice"
            wait_for(lambda: cookie_value(context, "id-bound"), "the credential cookie")
        finally:
            browser.close()
    requests = app.requests()
    assert ("POST /login-form", 303) in requests
    assert ("POST " + REGISTER, 200) in requests
    login = app.exchange[requests.index(("POST /login-form", 303))]
    assert "secure-session-registration" in login
