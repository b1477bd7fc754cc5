"""The DBSC wire exchange in a real browser, against a minimal raw ASGI app (no sessionware).

It pins down what Chromium sends and accepts, independently of the library: registration
header -> signed POST to the registration path -> JSON answer + bound cookie; then, with the
bound cookie deleted, the held request -> refresh POST -> 403 challenge -> signed retry -> fresh
cookie -> the held request arrives with it. DevTools reports the events. The exchange seen is
kept in ``EXCHANGE`` and printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from playwright.sync_api import sync_playwright

from tests.integration.https_server import (
    CHROMIUM,
    Certificate,
    chromium_args,
    make_certificate,
    serve_https,
)
from tests.services import require_executable


class WireApp:
    """Just enough of a DBSC server to watch the exchange; records what it is sent."""

    def __init__(self) -> None:
        self.exchange: list[dict[str, Any]] = []
        self.challenges: dict[str, str] = {}
        self.public_key: Any = None
        self.algorithm = ""
        self.cookie_serial = 0
        self.origin = ""

    def _bound_cookie(self) -> bytes:
        self.cookie_serial += 1
        return f"bound=v{self.cookie_serial}; Path=/; Secure; HttpOnly; SameSite=Lax".encode()

    def _session_json(self) -> bytes:
        return json.dumps(
            {
                "session_identifier": "wire-session",
                "refresh_url": "/dbsc/refresh",
                "scope": {
                    "origin": self.origin,
                    "include_site": False,
                    "scope_specification": [],
                },
                "credentials": [
                    {
                        "type": "cookie",
                        "name": "bound",
                        "attributes": "Path=/; Secure; HttpOnly; SameSite=Lax",
                    }
                ],
            }
        ).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        self.origin = f"https://{headers['host']}"
        record: dict[str, Any] = {"method": method, "path": path, "request": {}}
        for name in ("cookie", "secure-session-response", "sec-secure-session-id"):
            if name in headers:
                record["request"][name] = headers[name]
        token = headers.get("secure-session-response", "").strip('"')
        if token:
            record["jwt_header"] = jwt.get_unverified_header(token)
            record["jwt_payload"] = jwt.decode(token, options={"verify_signature": False})
        status, out, body = 200, [(b"content-type", b"text/plain")], b"ok"
        if path == "/login":
            self.challenges["reg"] = secrets.token_urlsafe(16)
            value = (
                f'(ES256 RS256);path="/dbsc/register";challenge="{self.challenges["reg"]}";'
                'authorization="auth-code"'
            )
            out.append((b"secure-session-registration", value.encode()))
        elif path == "/dbsc/register":
            header = record["jwt_header"]
            self.algorithm = header["alg"]
            self.public_key = jwt.PyJWK(header["jwk"], header["alg"]).key
            payload = jwt.decode(token, self.public_key, algorithms=[self.algorithm])
            assert payload["jti"] == self.challenges.pop("reg")
            out = [(b"content-type", b"application/json"), (b"set-cookie", self._bound_cookie())]
            body = self._session_json()
        elif path == "/dbsc/refresh":
            if not token:
                self.challenges["refresh"] = secrets.token_urlsafe(16)
                status = 403
                value = f'"{self.challenges["refresh"]}";id="wire-session"'
                out.append((b"secure-session-challenge", value.encode()))
                body = b""
            else:
                payload = jwt.decode(token, self.public_key, algorithms=[self.algorithm])
                assert payload["jti"] == self.challenges.pop("refresh")
                out = [
                    (b"content-type", b"application/json"),
                    (b"set-cookie", self._bound_cookie()),
                ]
                body = self._session_json()
        elif path == "/protected":
            body = headers.get("cookie", "").encode()
        record["status"] = status
        record["response"] = {k.decode(): v.decode() for k, v in out if k != b"content-type"} | (
            {"body": body.decode()} if path.startswith("/dbsc") else {}
        )
        self.exchange.append(record)
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    return make_certificate(tmp_path)


@pytest.fixture
def chromium() -> Iterator[str]:
    require_executable("Chromium", CHROMIUM)
    yield CHROMIUM


def _wait(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_register_expire_refresh_with_challenge(chromium: str, certificate: Certificate) -> None:
    app = WireApp()
    events: list[dict[str, Any]] = []
    with serve_https(app, certificate) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=chromium_args(certificate)
        )
        try:
            context = browser.new_context()
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.on("Network.deviceBoundSessionEventOccurred", lambda event: events.append(event))
            cdp.send("Network.enable")
            cdp.send("Network.enableDeviceBoundSessions", {"enable": True})
            page.goto(base + "/login")
            _wait(lambda: any(c["name"] == "bound" for c in context.cookies()))
            context.clear_cookies(name="bound")
            page.goto(base + "/protected")
            assert "bound=v2" in page.content()
            _wait(lambda: len(events) >= 2)
        finally:
            browser.close()
    print(json.dumps(app.exchange, indent=1))
    print(json.dumps(events, indent=1))
    paths = [
        (r["method"], r["path"], r["status"]) for r in app.exchange if "favicon" not in r["path"]
    ]
    assert ("POST", "/dbsc/register", 200) in paths
    assert ("POST", "/dbsc/refresh", 403) in paths
    assert ("POST", "/dbsc/refresh", 200) in paths
    assert paths[-1] == ("GET", "/protected", 200)
    assert paths.index(("POST", "/dbsc/refresh", 200)) < paths.index(("GET", "/protected", 200))
    kinds = {next(k for k in e if k.endswith("EventDetails")) for e in events}
    assert {"creationEventDetails", "challengeEventDetails", "refreshEventDetails"} <= kinds
